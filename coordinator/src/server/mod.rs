//! Starting Loch: [`cli`] reads the command line; [`local`] wires pg wire, Flight SQL, the
//! cluster service and (for `loch local`) executor children together;
//! [`secrets`] keeps the data directory's secret files.

pub mod cli;
pub mod local;
pub mod secrets;
