//! Which layers attend through a sliding window: `layer_types`, or the family's rule from the
//! `config.json` keys.

use super::*;

/// The sliding window and each layer's attention type (`layer_types`, or the family's rule).
pub(super) fn read_layer_types(
    k: &mut Keys<'_>,
    family: &Family,
    num_layers: usize,
) -> Result<(Option<usize>, Vec<String>), ConfigError> {
    let sliding_window = k.usize("sliding_window")?;
    // Some Gemma 2 configs repeat the window under an older name that transformers ignores.
    if let Some(size) = k.usize("sliding_window_size")? {
        if Some(size) != sliding_window {
            return Err(err(format!(
                "sliding_window_size={size} differs from sliding_window={sliding_window:?}"
            )));
        }
    }
    let window_key_present = k.map.contains_key("sliding_window");
    let (window, first_sliding) = match family.sliding {
        Sliding::Never => match sliding_window {
            Some(w) => {
                return Err(err(format!(
                    "sliding_window={w} is not part of {}; refusing rather than guessing which \
                     layers use it",
                    family.name
                )))
            }
            None => (None, 0),
        },
        Sliding::EveryLayer { default_window } => match sliding_window {
            None if !window_key_present => (default_window, 0),
            w => (w, 0),
        },
        Sliding::FromLayer { first_default } => {
            let on = k.bool("use_sliding_window")?.unwrap_or(false);
            let first = k.usize("max_window_layers")?.unwrap_or(first_default);
            (if on { sliding_window } else { None }, first)
        }
        Sliding::Periodic { default_window, .. } => {
            (Some(sliding_window.unwrap_or(default_window)), 0)
        }
    };
    if k.bool("use_bidirectional_attention")? == Some(true) {
        return Err(err(
            "use_bidirectional_attention=true (an encoder variant) is not a causal decoder",
        ));
    }
    if let Some(w) = window {
        check_count("'sliding_window'", w, MAX_WINDOW).map_err(err)?;
    }
    let explicit_types = k.get("layer_types");
    let period = match family.sliding {
        Sliding::Periodic {
            period,
            configurable: true,
            ..
        } => configured_period(k, period, explicit_types.is_some())?,
        Sliding::Periodic { period, .. } => period,
        _ => 0,
    };
    let layer_types: Vec<String> = match explicit_types {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| err("'layer_types' must be a list of strings"))?,
        None => (0..num_layers)
            .map(|i| {
                let sliding = match family.sliding {
                    Sliding::Never => false,
                    Sliding::EveryLayer { .. } => window.is_some(),
                    Sliding::FromLayer { .. } => window.is_some() && i >= first_sliding,
                    Sliding::Periodic { .. } => i % period < period - 1,
                };
                if sliding {
                    "sliding_attention".to_string()
                } else {
                    "full_attention".to_string()
                }
            })
            .collect(),
    };
    if layer_types.len() != num_layers {
        return Err(err(format!(
            "layer_types has {} entries for {num_layers} layers",
            layer_types.len()
        )));
    }
    Ok((window, layer_types))
}

/// Gemma 3 without `layer_types`: transformers (4.5x and 5) derives them from
/// `sliding_window_pattern`, default 6 (every 6th layer global). `_sliding_window_pattern` is
/// the attribute it writes back and never reads: a config whose `_sliding_window_pattern`
/// disagrees with the derivation means one thing to its author and another to transformers.
pub(super) fn configured_period(
    k: &mut Keys<'_>,
    default: usize,
    explicit_types: bool,
) -> Result<usize, ConfigError> {
    let pattern = k.usize("sliding_window_pattern")?;
    let written = k.usize("_sliding_window_pattern")?;
    if explicit_types {
        return Ok(0);
    }
    if pattern == Some(0) {
        return Err(err("'sliding_window_pattern' must be positive"));
    }
    let derived = pattern.unwrap_or(default);
    if let Some(w) = written.filter(|w| *w != derived) {
        return Err(err(format!(
            "'_sliding_window_pattern' = {w} but transformers derives layer_types from \
             'sliding_window_pattern' (here {derived}{}), which would make every \
             {derived}th layer global; set 'layer_types' (or 'sliding_window_pattern') \
             explicitly",
            if pattern.is_none() {
                ", the default"
            } else {
                ""
            }
        )));
    }
    Ok(derived)
}
