"""infrawatch: monitoring for water and energy infrastructure with a Rust-accelerated core."""

__version__ = "0.1.0"
