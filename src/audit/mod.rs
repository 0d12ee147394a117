//! Audits: experiments that try to refute a privacy claim and report an empirical epsilon lower
//! bound with its confidence. So far: [`bounds`], the statistics that turn attack outcomes into a
//! rigorous lower bound. (Replay, canaries and the attacks are still to come.)
pub mod bounds;
