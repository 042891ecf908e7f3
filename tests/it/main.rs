//! hindsight's integration tests, in one test binary: every binary links the whole crate
//! (candle, DataFusion, arrow), and on a two-core CI machine linking fifteen of them took longer
//! than running the tests. One module per area; shared helpers live in `common`.
//!
//! Run one area with a filter: `cargo test --test it sql_where::`.

mod common;

mod audit;
mod bad_inputs;
mod compact;
mod deploy;
mod device_stats;
mod encoding;
mod episode_drops;
mod export;
mod families;
mod generation;
mod hostile;
mod ingest_formats;
mod layers;
mod model_loading;
mod object_store;
mod ops;
mod orchestrators;
mod pipeline_run;
mod real_templates;
mod report_views;
mod schemas;
mod scoring_golden;
mod scoring_properties;
mod sharded_tasks;
mod sink;
mod sql_query;
mod sql_where;
mod templates_golden;
