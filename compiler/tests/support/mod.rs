//! Shared by the control-plane tests.
#![allow(dead_code)]

pub mod control;
pub mod postgres;
