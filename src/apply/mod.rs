//! Running a plan through the [`crate::kernel::Host`] seam: in order, journaled before each
//! change, verified after, undone on failure, one pass at a time.

pub mod journal;
pub mod lock;
pub mod rollback;
