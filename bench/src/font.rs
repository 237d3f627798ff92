//! Text in the PNGs: plotters draws it with ab_glyph from a TrueType file we register,
//! so no fontconfig or system font lookup is involved. Debian's fonts-dejavu-core
//! provides the file (bench/run.sh installs it when missing).

use std::sync::OnceLock;

use anyhow::{bail, Result};
use plotters::style::{register_font, FontStyle};

/// Where Debian (and most distributions) put a plain sans-serif TrueType font.
const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Registers "sans-serif" once per process; every later call returns the same result.
pub fn ensure() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        for path in CANDIDATES {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps a 'static reference; one font per process, leaked once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no TrueType font found (looked in {}); apt-get install fonts-dejavu-core",
            CANDIDATES.join(", ")
        ))
    });
    match r {
        Ok(()) => Ok(()),
        Err(e) => bail!("{e}"),
    }
}
