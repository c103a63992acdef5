//! The cluster as the mesh sees it (work in progress this session).
