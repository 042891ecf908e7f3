//! hindsight: turns raw LLM interaction logs into self-distillation datasets.
//!
//! The modules follow the data flow: episodes are built from inputs, tokenized canonically,
//! scored by a real forward pass of the model (student and teacher log-probs, teacher top-k,
//! relevance), and emitted for trainers.

pub mod bench;
pub mod cli;
pub mod config;
pub mod episode;
pub mod error;
pub mod export;
pub mod gguf;
pub mod ingest;
pub mod lineage;
pub mod model;
pub mod orchestrator;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod score;
pub mod sink;
pub mod sql;
pub mod store;
pub mod template;
pub mod tokenize;
pub mod util;

pub use error::{Error, Result};
