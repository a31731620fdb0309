//! The fused hot path: decode → rate-limit → features → scores → risk → line protocol.
