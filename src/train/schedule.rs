//! Learning-rate schedules with linear warmup, as transformers' `get_*_schedule_with_warmup`
//! define them: `step` counts optimizer steps from 0, warmup rises from 0 to the peak.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(ScheduleKind::Constant),
            "linear" => Ok(ScheduleKind::Linear),
            "cosine" => Ok(ScheduleKind::Cosine),
            other => Err(format!(
                "schedule '{other}' is not one of constant, linear, cosine"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let (step, warmup, total) = (step as f64, self.warmup as f64, self.total as f64);
        if step < warmup {
            return self.peak * step / warmup.max(1.0);
        }
        let progress = (step - warmup) / (total - warmup).max(1.0);
        self.peak
            * match self.kind {
                ScheduleKind::Constant => 1.0,
                ScheduleKind::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
                ScheduleKind::Cosine => {
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_transformers() {
        let s = |kind| Schedule {
            kind,
            peak: 1e-3,
            warmup: 10,
            total: 110,
        };
        // transformers: lr_lambda(0) = 0 in warmup, 5/10 at step 5, 1 at the end of warmup.
        for kind in [
            ScheduleKind::Constant,
            ScheduleKind::Linear,
            ScheduleKind::Cosine,
        ] {
            assert_eq!(s(kind).lr(0), 0.0);
            assert!((s(kind).lr(5) - 5e-4).abs() < 1e-15);
            assert!((s(kind).lr(10) - 1e-3).abs() < 1e-15);
        }
        assert!((s(ScheduleKind::Linear).lr(60) - 5e-4).abs() < 1e-15);
        assert_eq!(s(ScheduleKind::Linear).lr(110), 0.0);
        assert!((s(ScheduleKind::Cosine).lr(60) - 5e-4).abs() < 1e-15);
        assert!(s(ScheduleKind::Cosine).lr(110).abs() < 1e-15);
        assert_eq!(s(ScheduleKind::Constant).lr(109), 1e-3);
        assert!("warm".parse::<ScheduleKind>().is_err());
    }
}
