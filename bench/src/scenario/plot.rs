//! scenario.png: load on top (offered vs. served), queue time below (measured at the
//! client vs. reported by rwsgi), on one time axis.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::ramp::Row;

/// Draws the scenario into `path`.
pub fn draw(rows: &[Row], title: &str, path: &Path) -> Result<()> {
    crate::font::ensure()?;
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(e)?;
    let (top, bottom) = root.split_vertically(400);
    let t_max = rows.len().max(1) as f64;

    let rate_max = rows
        .iter()
        .map(|r| r.client.offered.max(r.client.throughput) as f64)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("requests / s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let offered = RGBColor(127, 127, 127);
    let served = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(
            rows.iter()
                .map(|r| (r.client.t + 0.5, r.client.offered as f64)),
            offered.stroke_width(2),
        ))
        .map_err(e)?
        .label("offered load")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], offered.stroke_width(3)));
    chart
        .draw_series(LineSeries::new(
            rows.iter()
                .map(|r| (r.client.t + 0.5, r.client.throughput as f64)),
            served.stroke_width(2),
        ))
        .map_err(e)?
        .label("throughput (2xx)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], served.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;

    let q_max = rows
        .iter()
        .flat_map(|r| [r.client.client_queue, r.server_queue])
        .flatten()
        .fold(0.001, f64::max)
        * 1000.0
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..q_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("mean queue time (ms)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let client = RGBColor(44, 160, 44);
    let server = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            rows.iter()
                .filter_map(|r| Some((r.client.t + 0.5, r.client.client_queue? * 1000.0))),
            client.stroke_width(3),
        ))
        .map_err(e)?
        .label("true queue time (client: latency − service time)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], client.stroke_width(3)));
    let has_server = rows.iter().any(|r| r.server_queue.is_some());
    if has_server {
        chart
            .draw_series(LineSeries::new(
                rows.iter()
                    .filter_map(|r| Some((r.client.t + 0.5, r.server_queue? * 1000.0))),
                server.stroke_width(2),
            ))
            .map_err(e)?
            .label("queue time reported by rwsgi (prometheus)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], server.stroke_width(3)));
        chart
            .draw_series(
                rows.iter()
                    .filter_map(|r| Some((r.client.t + 0.5, r.server_queue? * 1000.0)))
                    .map(|p| Circle::new(p, 3, server.filled())),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
