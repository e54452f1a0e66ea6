//! The fault-test harness: node processes in network namespaces
//! ([`netns`], [`process`], [`cluster`]), a workload that records every
//! operation ([`workload`]), and a checker that judges the history
//! ([`history`]).

pub mod cluster;
pub mod history;
pub mod netns;
pub mod process;
pub mod workload;
