//! `pipeline report FILE`: one self-contained HTML page ([`page`]) with its figures
//! ([`charts`], drawn by [`plots`]).

pub mod charts;
pub mod page;
pub mod plots;
