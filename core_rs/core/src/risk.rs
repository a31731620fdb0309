//! Risk levels from model outputs (DESIGN.md §3).
