//! e2e placeholder

mod harness;
