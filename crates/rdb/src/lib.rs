//! ferry-rdb
