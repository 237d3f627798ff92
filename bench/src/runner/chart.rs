//! latest.png: one bar chart per app (req/s per server), each with its own scale,
//! since the apps differ by orders of magnitude.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::apps;
use super::results::Comparison;

/// Bar colour of each server (by its `Server::name`): rwsgi red and orange.
pub fn color(server: &str) -> RGBColor {
    match server {
        "rwsgi" => RGBColor(214, 39, 40),
        "rwsgi-tracker" => RGBColor(255, 127, 14),
        "rwsgi-preload" => RGBColor(227, 119, 194),
        "granian" => RGBColor(31, 119, 180),
        "bjoern" => RGBColor(44, 160, 44),
        "uwsgi" => RGBColor(23, 190, 207),
        "gunicorn-gthread" => RGBColor(148, 103, 189),
        "gunicorn-sync" => RGBColor(140, 86, 75),
        _ => RGBColor(127, 127, 127),
    }
}

fn short(server: &str) -> &str {
    match server {
        "rwsgi-tracker" => "+tracker",
        "rwsgi-preload" => "+preload",
        "gunicorn-gthread" => "gthread",
        "gunicorn-sync" => "sync",
        s => s,
    }
}

fn compact(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Draws the chart into `path`.
pub fn draw(c: &Comparison, path: &Path) -> Result<()> {
    crate::font::ensure()?;
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    let root = BitMapBackend::new(path, (1500, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let title = format!(
        "rwsgi bench {} · {} workers · req/s, median of {} round(s)",
        c.meta.date, c.meta.workers, c.meta.rounds
    );
    let root = root.titled(&title, ("sans-serif", 26)).map_err(e)?;
    let apps_in: Vec<&String> = c.meta.apps.iter().collect();
    let cols = 3usize;
    let rows = apps_in.len().div_ceil(cols).max(1);
    let panels = root.split_evenly((rows, cols));
    for (panel, app) in panels.iter().zip(apps_in) {
        let bars: Vec<(&str, f64)> = c
            .meta
            .servers
            .iter()
            .filter_map(|s| c.cell(app, s).map(|x| (s.as_str(), x.rps)))
            .collect();
        let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.18;
        let n = bars.len().max(1);
        let caption = apps::find(app).map(|a| a.title).unwrap_or(app);
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..max)
            .map_err(e)?;
        let labels: Vec<&str> = bars.iter().map(|b| short(b.0)).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).copied().unwrap_or("").to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| compact(*v))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (s, v))| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    color(s).filled(),
                );
                r.set_margin(0, 0, 8, 8);
                r
            }))
            .map_err(e)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                Text::new(
                    compact(*v),
                    (SegmentValue::CenterOf(i), *v + max * 0.02),
                    ("sans-serif", 14).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )
            }))
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::results::{Cell, Meta};

    #[test]
    fn compact_numbers() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(1234.0), "1.2k");
        assert_eq!(compact(82_345.0), "82k");
    }

    #[test]
    fn draws_a_png() {
        if crate::font::ensure().is_err() {
            eprintln!("no font on this machine: skipping");
            return;
        }
        let c = Comparison {
            meta: Meta {
                date: "test".into(),
                apps: vec!["hello".into(), "sleep".into()],
                servers: vec!["granian".into(), "gunicorn-sync".into()],
                rounds: 1,
                workers: 2,
                ..Meta::default()
            },
            cells: vec![
                Cell {
                    app: "hello".into(),
                    server: "granian".into(),
                    rps: 80_000.0,
                    ..Cell::default()
                },
                Cell {
                    app: "sleep".into(),
                    server: "gunicorn-sync".into(),
                    rps: 190.0,
                    ..Cell::default()
                },
            ],
            ..Comparison::default()
        };
        let path =
            std::env::temp_dir().join(format!("rwsgi-bench-chart-{}.png", std::process::id()));
        draw(&c, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let _ = std::fs::remove_file(path);
    }
}
