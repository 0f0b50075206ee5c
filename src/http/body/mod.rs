//! Request and response bodies.

pub(crate) mod request;
pub(crate) mod response;

pub use request::Body;
pub use response::ResponseBody;
