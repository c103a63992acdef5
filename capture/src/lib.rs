//! In-pod capture plumbing (in progress this session).
