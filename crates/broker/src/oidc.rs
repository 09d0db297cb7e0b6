//! OIDC push tokens (being written).
