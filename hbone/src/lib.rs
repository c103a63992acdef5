//! HBONE tunnel protocol (in progress this session).
