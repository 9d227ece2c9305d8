//! `pipeline report FILE`: one self-contained HTML page ([`page`]) with the DAG drawn
//! ([`dag`]) and its figures ([`charts`], drawn by [`plots`]).

pub mod charts;
pub mod dag;
pub mod html;
pub mod page;
pub mod plots;
