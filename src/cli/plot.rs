//! The loss plot written at the end of training (SVG through plotters).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// Training loss per step and validation loss at the steps it was measured, as an SVG,
/// written through a temporary file.
pub fn loss_svg(path: &Path, train: &[(usize, f64)], valid: &[(usize, f64)]) -> anyhow::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let all = train.iter().chain(valid);
        let max_step = all.clone().map(|p| p.0).max().unwrap_or(1).max(1);
        let (lo, hi) = all
            .filter(|p| p.1.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let (lo, hi) = if lo.is_finite() {
            (lo.min(hi - 1e-3), hi)
        } else {
            (0.0, 1.0)
        };
        let pad = (hi - lo) * 0.05;
        let mut chart = ChartBuilder::on(&root)
            .caption("webqlora: loss", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0..max_step, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()?;
        chart
            .draw_series(LineSeries::new(train.iter().copied(), &BLUE))?
            .label("training")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        if !valid.is_empty() {
            chart
                .draw_series(LineSeries::new(valid.iter().copied(), &RED))?
                .label("validation")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
            chart.draw_series(valid.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
    }
    webqlora::io::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
