//! One file per MCP tool.

pub mod diagnose_student;
pub mod model_info;
pub mod predict_ctr;
pub mod rank_candidates;
pub mod recommend_items;
pub mod similar_items;
