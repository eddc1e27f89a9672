//! The job protocol every part of the program speaks (pueue's shape): what can be asked
//! for ([`Work`], with a [`Trigger`] and a reply channel), the one [`Queue`] it goes
//! through, why a request is refused ([`Rejected`]), what comes back ([`JobOutcome`]), and
//! the worker that runs one job at a time with the engine. The daemon's scheduler, the REST
//! API and chat commands are all clients of this module; it imports none of them.

pub mod live;
mod queue;
mod run;

pub use queue::{Finished, Queue, Rejected, Request, Trigger, Work, start};
pub use run::JobOutcome;
