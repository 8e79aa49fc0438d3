//! Shared helpers for the criterion benches in this folder (each bench is its own target).
