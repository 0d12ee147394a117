//! The models dpaudit trains, built by name. Inputs are (B, 1, 28, 28) floats in [0, 1]
//! (MNIST-format images), except for `abadi-pca`, whose inputs are (B, k) DP-PCA projections
//! (see [`pca_dims`]), and the `scatter-` models, whose inputs are the images' (B, 81, 7, 7)
//! scattering coefficients (see [`uses_scattering`]); outputs are 10 logits.
use crate::error::{Error, Result};
use crate::train::per_example::{LayerSpec, Sequential};
use tch::nn;

/// The model names [`build`] accepts.
pub const MODEL_NAMES: [&str; 8] =
    ["logreg", "mlp", "tanh-cnn", "seed-cnn", "seed-cnn-pn", "abadi-pca", "scatter-linear", "scatter-cnn"];

/// Whether the model trains on the images' scattering coefficients
/// ([`crate::train::scattering`], computed by `dpaudit train` before training) rather than on
/// pixels: `scatter-linear` and `scatter-cnn`.
pub fn uses_scattering(name: &str) -> bool {
    matches!(name, "scatter-linear" | "scatter-cnn")
}

/// Whether the model's input is the raw (B, 1, 28, 28) image, as audits and attacks that replay
/// training need: every model but the DP-PCA (`abadi-pca`) and scattering (`scatter-`) ones.
pub fn trains_on_pixels(name: &str) -> bool {
    pca_dims(name).is_none() && !uses_scattering(name)
}

/// GroupNorm groups over the 81 scattering channels (Tramèr & Boneh 2021: 27).
pub const SCATTER_GROUPS: i64 = 27;

/// The DP-PCA dimension of `abadi-pca` (Abadi et al. 2016: 60).
pub const ABADI_PCA_DIMS: usize = 60;

/// The input dimension of a model that trains on a DP-PCA projection rather than on images:
/// `abadi-pca` (60) and `abadi-pca-K` (K >= 1); `None` for the image models.
///
/// # Examples
/// ```
/// use dpaudit::train::models::pca_dims;
/// assert_eq!((pca_dims("abadi-pca"), pca_dims("abadi-pca-20"), pca_dims("mlp")), (Some(60), Some(20), None));
/// assert_eq!(pca_dims("abadi-pca-0"), None);
/// ```
pub fn pca_dims(name: &str) -> Option<usize> {
    let (name, _) = split_hidden(name);
    match name.strip_prefix("abadi-pca") {
        Some("") => Some(ABADI_PCA_DIMS),
        Some(rest) => {
            let digits = rest.strip_prefix('-')?;
            if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        }
        None => None,
    }
}

/// The name of the `abadi-pca` model on a `k`-dimensional projection (`abadi-pca` for 60).
pub fn abadi_pca_name(k: usize) -> String {
    if k == ABADI_PCA_DIMS {
        "abadi-pca".to_owned()
    } else {
        format!("abadi-pca-{k}")
    }
}

/// Splits a trailing hidden-width suffix `-hN` (N >= 1, no leading zero) off a model name:
/// `mlp-h500` is `mlp` with 500 hidden units, `abadi-pca-20-h500` is `abadi-pca-20` with 500.
/// Returns the name unchanged and `None` when there is no such suffix.
///
/// # Examples
/// ```
/// use dpaudit::train::models::split_hidden;
/// assert_eq!(split_hidden("mlp-h500"), ("mlp", Some(500)));
/// assert_eq!(split_hidden("abadi-pca-20-h64"), ("abadi-pca-20", Some(64)));
/// assert_eq!(split_hidden("mlp"), ("mlp", None));
/// assert_eq!(split_hidden("mlp-h0"), ("mlp-h0", None));
/// ```
pub fn split_hidden(name: &str) -> (&str, Option<i64>) {
    if let Some((base, digits)) = name.rsplit_once("-h") {
        if !digits.is_empty() && !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(h) = digits.parse::<i64>() {
                return (base, Some(h));
            }
        }
    }
    (name, None)
}

/// The name of `model` (`mlp`, `abadi-pca` or `abadi-pca-K`) with `hidden` hidden units
/// (`mlp-h500`); the plain name for the default width [`MLP_HIDDEN`].
///
/// # Errors
/// [`Error::InvalidParameter`] for a model without a single hidden layer, a name that already
/// carries a width, or `hidden` = 0.
pub fn with_hidden(model: &str, hidden: usize) -> Result<String> {
    if hidden == 0 {
        return Err(Error::invalid("hidden units", hidden, "must be at least 1"));
    }
    if split_hidden(model).1.is_some() || !(model == "mlp" || pca_dims(model).is_some()) {
        return Err(Error::invalid("model", model, "hidden units can be set for mlp and abadi-pca only"));
    }
    Ok(if hidden as i64 == MLP_HIDDEN { model.to_owned() } else { format!("{model}-h{hidden}") })
}

/// Side of the square input images.
pub const IMAGE_SIDE: i64 = 28;
/// Number of classes.
pub const CLASSES: i64 = 10;
/// Hidden units of `mlp` (Abadi et al. 2016's MNIST network).
pub const MLP_HIDDEN: i64 = 1000;

fn linear(in_features: i64, out_features: i64) -> LayerSpec {
    LayerSpec::Linear { in_features, out_features, bias: true }
}

fn conv(in_channels: i64, out_channels: i64, kernel: i64, stride: i64, padding: i64) -> LayerSpec {
    LayerSpec::Conv2d { in_channels, out_channels, kernel, stride, padding, bias: true }
}

/// A one-hidden-layer ReLU network on flattened inputs of `inputs` features (784 for raw images,
/// or the dimension of a DP-PCA projection).
pub fn mlp_specs(inputs: i64, hidden: i64, classes: i64) -> Vec<LayerSpec> {
    vec![LayerSpec::Flatten, linear(inputs, hidden), LayerSpec::Relu, linear(hidden, classes)]
}

/// The layer list of a named model.
///
/// - `logreg`: flatten, linear 784 -> 10.
/// - `mlp`: flatten, linear 784 -> 1000, ReLU, linear 1000 -> 10 (`mlp-hN`: N hidden units).
/// - `tanh-cnn` (Papernot et al. 2021): conv 16 8x8 stride 2 padding 3, tanh, maxpool 2 stride 1,
///   conv 32 4x4 stride 2, tanh, maxpool 2 stride 1, flatten, linear 512 -> 32, tanh, linear 32 -> 10
///   (the model of `opacus_throughput.py`).
/// - `seed-cnn`: two blocks of (conv 5x5 padding 2, ReLU, maxpool 2 stride 2) with 16 and 32
///   channels, flatten, linear 1568 -> 32, ReLU, linear 32 -> 10.
/// - `seed-cnn-pn`: `seed-cnn` with a public-data BatchNorm after each conv (Davody et al. 2020;
///   needs a public batch, e.g. `dpaudit train --public-norm-data`).
/// - `abadi-pca` (Abadi et al. 2016): linear 60 -> 1000, ReLU, linear 1000 -> 10 on the 60-dimensional
///   DP-PCA projection of the images (`abadi-pca-K`: on a K-dimensional one; a `-hN` suffix sets
///   N hidden units, see [`split_hidden`]); `dpaudit train`
///   computes the projection (`crate::train::pca`) and records its cost first.
/// - `scatter-linear` (Tramèr & Boneh 2021): GroupNorm (27 groups) of the 81 x 7 x 7 scattering
///   coefficients, flatten, linear 3969 -> 10.
/// - `scatter-cnn` (Tramèr & Boneh 2021's MNIST ScatterNet+CNN): GroupNorm (27 groups), conv 16
///   3x3 stride 2 padding 1, tanh, conv 32 3x3 padding 1, tanh, flatten, linear 512 -> 32, tanh,
///   linear 32 -> 10.
///
/// # Errors
/// [`Error::InvalidParameter`] for an unknown name (the message lists [`MODEL_NAMES`]).
pub fn specs(name: &str) -> Result<Vec<LayerSpec>> {
    let pixels = IMAGE_SIDE * IMAGE_SIDE;
    if let (base, Some(hidden)) = split_hidden(name) {
        if base == "mlp" {
            return Ok(mlp_specs(pixels, hidden, CLASSES));
        }
        if let Some(k) = pca_dims(base) {
            return Ok(mlp_specs(k as i64, hidden, CLASSES));
        }
    }
    Ok(match name {
        "logreg" => vec![LayerSpec::Flatten, linear(pixels, CLASSES)],
        "mlp" => mlp_specs(pixels, MLP_HIDDEN, CLASSES),
        "tanh-cnn" => vec![
            conv(1, 16, 8, 2, 3),
            LayerSpec::Tanh,
            LayerSpec::MaxPool2d { kernel: 2, stride: 1 },
            conv(16, 32, 4, 2, 0),
            LayerSpec::Tanh,
            LayerSpec::MaxPool2d { kernel: 2, stride: 1 },
            LayerSpec::Flatten,
            linear(32 * 4 * 4, 32),
            LayerSpec::Tanh,
            linear(32, CLASSES),
        ],
        "seed-cnn-pn" => vec![
            conv(1, 16, 5, 1, 2),
            LayerSpec::PublicBatchNorm2d { channels: 16 },
            LayerSpec::Relu,
            LayerSpec::MaxPool2d { kernel: 2, stride: 2 },
            conv(16, 32, 5, 1, 2),
            LayerSpec::PublicBatchNorm2d { channels: 32 },
            LayerSpec::Relu,
            LayerSpec::MaxPool2d { kernel: 2, stride: 2 },
            LayerSpec::Flatten,
            linear(32 * 7 * 7, 32),
            LayerSpec::Relu,
            linear(32, CLASSES),
        ],
        "seed-cnn" => vec![
            conv(1, 16, 5, 1, 2),
            LayerSpec::Relu,
            LayerSpec::MaxPool2d { kernel: 2, stride: 2 },
            conv(16, 32, 5, 1, 2),
            LayerSpec::Relu,
            LayerSpec::MaxPool2d { kernel: 2, stride: 2 },
            LayerSpec::Flatten,
            linear(32 * 7 * 7, 32),
            LayerSpec::Relu,
            linear(32, CLASSES),
        ],
        "scatter-linear" => {
            let (c, side) = (crate::train::scattering::CHANNELS, crate::train::scattering::OUTPUT_SIDE);
            vec![
                LayerSpec::GroupNorm { groups: SCATTER_GROUPS, channels: c },
                LayerSpec::Flatten,
                linear(c * side * side, CLASSES),
            ]
        }
        "scatter-cnn" => vec![
            LayerSpec::GroupNorm { groups: SCATTER_GROUPS, channels: crate::train::scattering::CHANNELS },
            conv(crate::train::scattering::CHANNELS, 16, 3, 2, 1),
            LayerSpec::Tanh,
            conv(16, 32, 3, 1, 1),
            LayerSpec::Tanh,
            LayerSpec::Flatten,
            linear(32 * 4 * 4, 32),
            LayerSpec::Tanh,
            linear(32, CLASSES),
        ],
        other if pca_dims(other).is_some() => {
            let k = pca_dims(other).expect("checked") as i64;
            mlp_specs(k, MLP_HIDDEN, CLASSES)
        }
        other => {
            return Err(Error::invalid(
                "model",
                other,
                format!("must be one of {} (or abadi-pca-K for a K-dimensional DP-PCA; mlp and abadi-pca take a -hN suffix for N hidden units)", MODEL_NAMES.join(", ")),
            ));
        }
    })
}

/// Builds the named model with its variables under `path` (one `nn::VarStore` per network).
/// The initial weights come from libtorch's process-wide generator: build inside
/// [`crate::torch_rng::seeded`] for weights that depend on a seed alone.
///
/// # Errors
/// As [`specs`] and [`Sequential::new`].
///
/// # Examples
/// ```
/// use tch::{nn, Device};
/// let vs = nn::VarStore::new(Device::Cpu);
/// let model = dpaudit::train::models::build("tanh-cnn", &vs.root()).unwrap();
/// assert_eq!(model.parameters().len(), 8);
/// ```
pub fn build(name: &str, path: &nn::Path) -> Result<Sequential> {
    Sequential::new(path, &specs(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(name: &str) -> Vec<(i64, i64)> {
        specs(name)
            .unwrap()
            .iter()
            .filter_map(|l| match l {
                LayerSpec::Linear { in_features, out_features, .. } => Some((*in_features, *out_features)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hidden_suffix_sets_the_hidden_width_of_mlp_and_abadi_pca_only() {
        assert_eq!(widths("mlp"), vec![(784, 1000), (1000, 10)]);
        assert_eq!(widths("mlp-h64"), vec![(784, 64), (64, 10)]);
        assert_eq!(widths("abadi-pca-h250"), vec![(60, 250), (250, 10)]);
        assert_eq!(widths("abadi-pca-20-h8"), vec![(20, 8), (8, 10)]);
        assert_eq!(pca_dims("abadi-pca-20-h8"), Some(20));
        assert_eq!(pca_dims("abadi-pca-h8"), Some(60));
        for bad in ["tanh-cnn-h5", "logreg-h5", "mlp-h0", "mlp-h", "mlp-h05", "seed-cnn-h3"] {
            assert!(specs(bad).is_err(), "{bad}");
        }
        assert_eq!(with_hidden("mlp", 64).unwrap(), "mlp-h64");
        assert_eq!(with_hidden("abadi-pca-20", 1000).unwrap(), "abadi-pca-20");
        assert!(with_hidden("tanh-cnn", 64).is_err());
        assert!(with_hidden("mlp-h64", 32).is_err());
        assert!(with_hidden("mlp", 0).is_err());
    }
}
