//! autoscale.png: three panels over time, every run in each: queue time and p99
//! latency (log scale, seconds), and the worker count with the workers the offered
//! load needs.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::{Output, Row};

const QUEUE_COLOR: RGBColor = RGBColor(31, 119, 180);
const CPU_COLOR: RGBColor = RGBColor(214, 39, 40);
const BOTH_COLOR: RGBColor = RGBColor(44, 160, 44);
const NEED_COLOR: RGBColor = RGBColor(127, 127, 127);

pub(super) fn draw(out: &Output, title: &str, path: &Path) -> Result<()> {
    crate::font::ensure()?;
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    let root = BitMapBackend::new(path, (1400, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    let panels = root.split_evenly((3, 1));
    let t_max = out
        .runs
        .iter()
        .map(|r| r.rows.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let color = |i: usize| [QUEUE_COLOR, CPU_COLOR, BOTH_COLOR][i % 3];

    // Queue time and p99: log scale from 1 ms.
    type Pick = fn(&Row) -> Option<f64>;
    let timed: [(&str, Pick); 2] = [
        ("queue time (client: mean latency − service), s", |r| {
            r.client.client_queue
        }),
        ("p99 latency, s", |r| r.p99),
    ];
    for (panel, (label, pick)) in panels.iter().zip(timed) {
        let top = out
            .runs
            .iter()
            .flat_map(|r| r.rows.iter().filter_map(pick))
            .fold(0.01, f64::max)
            * 1.5;
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..t_max, (0.001f64..top).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        for (i, run) in out.runs.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(
                    run.rows
                        .iter()
                        .filter_map(|r| Some((r.client.t + 0.5, pick(r)?.max(0.001)))),
                    c.stroke_width(2),
                ))
                .map_err(e)?
                .label(format!(
                    "scaled on {} (target {})",
                    run.policy.name(),
                    run.target
                ))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(e)?;
    }

    // Workers, and what the offered load needs at full utilization.
    let w_max = out.max_workers as f64 + 1.0;
    let mut chart = ChartBuilder::on(&panels[2])
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..w_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("workers")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    if let Some(first) = out.runs.first() {
        chart
            .draw_series(LineSeries::new(
                first.rows.iter().map(|r| {
                    (
                        r.client.t + 0.5,
                        r.client.offered as f64 / out.per_worker_rps,
                    )
                }),
                NEED_COLOR.stroke_width(1),
            ))
            .map_err(e)?
            .label("offered load ÷ one worker's capacity")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], NEED_COLOR.stroke_width(2)));
    }
    for (i, run) in out.runs.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                run.rows
                    .iter()
                    .map(|r| (r.client.t + 0.5, r.workers as f64)),
                c.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!("workers, scaled on {}", run.policy.name()))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
