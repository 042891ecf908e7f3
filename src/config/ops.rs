//! Settings that decide whether a night publishes and whom it tells, not what its rows are:
//! never part of the config fingerprint or the dataset identity.

/// Thresholds of the drift guards (`[guards]` in the pipeline file). They decide whether a
/// night publishes, not what its rows are, so they are not part of the dataset's identity.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftGuards {
    /// Largest Kolmogorov–Smirnov distance (0..1) between tonight's and the previous night's
    /// relevance distributions.
    pub max_relevance_ks: Option<f64>,
    /// Largest absolute change of the fraction of episodes dropped for any one reason (rows
    /// already in the dataset left out).
    pub max_drop_rate_change: Option<f64>,
    /// Largest relative change of the mean response tokens per row (0.5 = ±50%).
    pub max_tokens_per_row_change: Option<f64>,
    /// Nights with fewer new rows are not compared, nor replace a baseline that has this many.
    pub min_rows: u64,
    /// `false` reports a drift without refusing the publish (`run --accept-drift`).
    pub enforce: bool,
}

impl Default for DriftGuards {
    fn default() -> Self {
        DriftGuards {
            max_relevance_ks: None,
            max_drop_rate_change: None,
            max_tokens_per_row_change: None,
            min_rows: 100,
            enforce: true,
        }
    }
}

impl DriftGuards {
    /// Whether any threshold is set.
    pub fn any(&self) -> bool {
        self.max_relevance_ks.is_some()
            || self.max_drop_rate_change.is_some()
            || self.max_tokens_per_row_change.is_some()
    }

    /// Rejects thresholds that cannot be met or that mean nothing.
    pub fn validate(&self) -> Result<(), String> {
        let check = |key: &str, v: Option<f64>, max: f64| match v {
            Some(x) if !(x.is_finite() && (0.0..=max).contains(&x)) => {
                Err(if max.is_finite() && max < f64::MAX {
                    format!("guards.{key} = {x} is out of range (0 to {max})")
                } else {
                    format!("guards.{key} = {x} must be a finite number >= 0")
                })
            }
            _ => Ok(()),
        };
        check("max_relevance_ks", self.max_relevance_ks, 1.0)?;
        check("max_drop_rate_change", self.max_drop_rate_change, 1.0)?;
        check(
            "max_tokens_per_row_change",
            self.max_tokens_per_row_change,
            f64::MAX,
        )
    }
}

/// Where a run sends its OpenLineage events (`[lineage]`; `--openlineage-url`,
/// `--openlineage-file` and `$OPENLINEAGE_URL` override it).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineageConfig {
    /// HTTP endpoint: a bare server URL (`http://marquez:5000`) gets OpenLineage's
    /// `/api/v1/lineage`, a URL with a path is used as it is.
    pub url: Option<String>,
    /// A file the events are appended to, one JSON object per line.
    pub file: Option<std::path::PathBuf>,
    /// The job namespace (default `$OPENLINEAGE_NAMESPACE`, else `hindsight`).
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_thresholds_out_of_range_are_refused_with_their_key() {
        assert!(DriftGuards::default().validate().is_ok());
        let ks = DriftGuards {
            max_relevance_ks: Some(1.5),
            ..Default::default()
        };
        assert!(ks
            .validate()
            .is_err_and(|e| e.contains("guards.max_relevance_ks")));
        let tokens = DriftGuards {
            max_tokens_per_row_change: Some(f64::NAN),
            ..Default::default()
        };
        assert!(tokens
            .validate()
            .is_err_and(|e| e.contains("max_tokens_per_row_change") && e.contains(">= 0")));
        let fine = DriftGuards {
            max_tokens_per_row_change: Some(3.0),
            max_drop_rate_change: Some(0.1),
            ..Default::default()
        };
        assert!(fine.validate().is_ok());
    }
}
