//! Cluster-in-a-box harness (work in progress this session).
