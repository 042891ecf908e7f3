//! The relevance columns against each other and the dataset's method and threshold.

use super::*;

/// The relevance columns (their finiteness is a column check): `relevance` is the column of the dataset's
/// `relevance_method` (null exactly where that one is); no kept row is under the threshold;
/// `relevance_pmi` and `relevance_pmi_mean` are null together and share their sign (one is the
/// other divided by a token count); no PMI for a demonstration (it has no feedback to probe).
pub(super) fn check_relevance(
    r: &OutputRow,
    meta: &crate::sink::meta::DatasetMeta,
    file: &str,
    row: u64,
    rep: &mut ValidationReport,
) {
    let mut bad =
        |column: &str, message: String| rep.push(Some(file), Some(row), Some(column), message);
    // A relevance column's value, from the contract table (`None` for a null or unknown one).
    let by_column = |name: &str| {
        crate::sink::columns::column(name)
            .and_then(|c| c.values.float(r))
            .flatten()
    };
    if meta.relevance_method == RelevanceMethod::PmiControl.as_str() {
        // The combination has no column of its own: recompute it from the two it combines.
        let want = r
            .relevance_pmi
            .zip(r.relevance_control_kl)
            .map(|(p, kl)| pmi_control(f64::from(p), f64::from(kl)));
        let agrees = match (want, r.relevance) {
            (Some(w), Some(x)) => within(f64::from(x) - w, 1e-4 * w.abs().max(1.0)),
            (None, None) => true,
            _ => false,
        };
        if !agrees {
            bad(
                "relevance",
                format!(
                    "is {:?}, but relevance_method is 'pmi_control' and relevance_pmi + \
                     ln(max(relevance_control_kl, 1e-6)) is {want:?}",
                    r.relevance
                ),
            );
        }
    } else {
        match RELEVANCE_COLUMNS
            .iter()
            .find(|(_, m)| m.as_str() == meta.relevance_method)
        {
            None => bad(
                "relevance",
                format!(
                    "the dataset's relevance_method '{}' is not a known method",
                    meta.relevance_method
                ),
            ),
            Some((column, _)) => {
                let want = by_column(column);
                if want.map(f32::to_bits) != r.relevance.map(f32::to_bits) {
                    bad(
                        "relevance",
                        format!(
                            "is {:?}, but relevance_method is '{}' and {column} is {want:?}",
                            r.relevance, meta.relevance_method
                        ),
                    );
                }
            }
        }
    }
    if let (Some(x), Some(t)) = (r.relevance, meta.relevance_threshold) {
        if f64::from(x) < t {
            bad(
                "relevance",
                format!("{x} is under the dataset's relevance_threshold {t}: the row should have been dropped"),
            );
        }
    }
    match (r.relevance_pmi, r.relevance_pmi_mean) {
        (Some(s), Some(m)) if s.signum() != m.signum() && s != 0.0 && m != 0.0 => bad(
            "relevance_pmi_mean",
            format!("{m} has another sign than relevance_pmi {s} (it is its mean over tokens)"),
        ),
        (Some(_), None) | (None, Some(_)) => bad(
            "relevance_pmi_mean",
            "relevance_pmi and relevance_pmi_mean must be null together".into(),
        ),
        _ => {}
    }
    if r.relevance_pmi_answer.is_some() && r.relevance_pmi.is_none() {
        bad(
            "relevance_pmi_answer",
            "set while relevance_pmi is null (both come from the same feedback probe)".into(),
        );
    }
    if r.source_kind == "demonstration" && r.relevance_pmi.is_some() {
        bad(
            "relevance_pmi",
            "set on a demonstration (a demonstration is no reaction to a response)".into(),
        );
    }
}
