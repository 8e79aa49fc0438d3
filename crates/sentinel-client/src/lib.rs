//! ferry-sentinel
