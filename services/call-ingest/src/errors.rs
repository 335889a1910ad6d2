//! Error answers of the HTTP edge (shared with the other services' HTTP
//! endpoints, see kit::api_error).

pub use kit::api_error::ApiError;
