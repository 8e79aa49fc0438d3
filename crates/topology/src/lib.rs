//! ferry-topology
