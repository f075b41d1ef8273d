//! The statistics `profiler diff` judges changes with, written out because they are short:
//! a two-proportion z-test for shares of samples, a Poisson rate test for CPU time, the
//! Mann-Whitney U test for span durations, and Holm's step-down correction for testing many
//! functions or spans at once. Each test asks whether a quantity moved by more than a margin
//! (two one-sided tests): with enough data any difference at all becomes "significant", and
//! a gate must not fail on differences nobody would act on.

/// P(Z > z) for a standard normal Z, from erfc.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Two-sided p-value of a standard normal statistic.
pub fn two_sided(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    (2.0 * normal_sf(z.abs())).min(1.0)
}

/// Complementary error function: the Chebyshev fit of Numerical Recipes (`erfcc`), with a
/// relative error below 1.2e-7 everywhere, so tiny p-values keep their magnitude.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Two one-sided tests, of a change up beyond a margin and down beyond it, as one p-value.
fn either_side(p_up: f64, p_down: f64) -> f64 {
    (2.0 * p_up.min(p_down)).min(1.0)
}

/// Two-proportion z-test against a margin: did the share `k2/n2` move away from `k1/n1` by
/// more than `margin` (a fraction: 0.005 is half a percentage point), up or down? Returns the
/// p-value. With a margin of 0 it is the two-sided Wald test. No samples on a side, or a
/// share that is 0 or 1 on both, leaves nothing to test: p = 1.
pub fn two_proportions(k1: u64, n1: u64, k2: u64, n2: u64, margin: f64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let (p1, p2) = (k1 as f64 / n1f, k2 as f64 / n2f);
    let mut se = (p1 * (1.0 - p1) / n1f + p2 * (1.0 - p2) / n2f).sqrt();
    if se <= 0.0 {
        // 0% against 100%: the unpooled variance is 0, the pooled one is not.
        let pooled = (k1 as f64 + k2 as f64) / (n1f + n2f);
        se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    }
    if se <= 0.0 || !se.is_finite() {
        return 1.0;
    }
    let d = p2 - p1;
    either_side(normal_sf((d - margin) / se), normal_sf((-d - margin) / se))
}

/// Did the CPU time change by more than `margin` (0.02: 2%), given sample counts taken at
/// `f1` and `f2` samples per second of CPU? At the margin's edge, conditioned on the sum of
/// the counts, the first is binomial with p = f1 / (f1 + f2 (1 ± margin)); the normal
/// approximation of each binomial gives a one-sided p-value.
pub fn poisson_rates(n1: u64, f1: f64, n2: u64, f2: f64, margin: f64) -> f64 {
    let total = n1 as f64 + n2 as f64;
    if total == 0.0 || f1 <= 0.0 || f2 <= 0.0 {
        return 1.0;
    }
    // How unlikely so few (up) or so many (down) samples on the first side are.
    let tail = |scale: f64, up: bool| {
        let p = f1 / (f1 + f2 * scale);
        let sd = (total * p * (1.0 - p)).sqrt();
        if sd <= 0.0 || !sd.is_finite() {
            return 1.0;
        }
        let z = (total * p - n1 as f64) / sd;
        normal_sf(if up { z } else { -z })
    };
    either_side(
        tail(1.0 + margin, true),
        tail((1.0 - margin).max(0.0), false),
    )
}

/// Mann-Whitney U (normal approximation with tie and continuity corrections): the U of `b`
/// and its z, positive when values of `b` tend to be larger. z = 0 when a side is empty or
/// every value is tied.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return (0.0, 0.0);
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, false))
        .chain(b.iter().map(|&x| (x, true)))
        .collect();
    all.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len() as f64;
    let (mut rank_sum_b, mut tie_term) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        rank_sum_b += mean_rank * all[i..j].iter().filter(|&&(_, in_b)| in_b).count() as f64;
        i = j;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u_b = rank_sum_b - n2f * (n2f + 1.0) / 2.0;
    let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 || !var.is_finite() {
        return (u_b, 0.0);
    }
    let d = u_b - n1f * n2f / 2.0;
    // Continuity correction: half a step toward the mean.
    let z = (d.abs() - 0.5).max(0.0) * d.signum() / var.sqrt();
    (u_b, z)
}

/// Are durations `b` longer than `a` stretched by `margin` (0.02: 2%) or by `floor_ns`,
/// whichever is more, or shorter than `a` shrunk by as much? Two one-sided Mann-Whitney tests
/// against the moved base, as one p-value: timings measured to the microsecond differ
/// "significantly" by tiny amounts between any two runs, and a change that small is not one
/// anybody acts on.
pub fn durations_changed(a: &[u64], b: &[u64], margin: f64, floor_ns: f64) -> f64 {
    let moved = |sign: f64| {
        a.iter()
            .map(|&x| {
                let x = x as f64;
                x + sign * (x * margin).max(floor_ns)
            })
            .collect::<Vec<f64>>()
    };
    let b: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let (_, z_up) = mann_whitney(&moved(1.0), &b);
    let (_, z_down) = mann_whitney(&moved(-1.0), &b);
    either_side(normal_sf(z_up), normal_sf(-z_down))
}

/// Holm's step-down adjustment: p-values that can be compared with alpha directly while
/// keeping the chance of any false positive among all of them at or below alpha, whatever
/// their dependence. Same order as the input.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let scaled = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(scaled);
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn normal_tail_matches_tables() {
        // Φ(1.959964) = 0.975; reference values from math.erfc (Python).
        assert!(close(two_sided(1.959_963_984_540_054), 0.05, 1e-6));
        assert!(close(normal_sf(0.0), 0.5, 1e-7));
        assert!(close(normal_sf(3.0), 0.001_349_898_031_630_094_6, 1e-6));
        assert!(close(normal_sf(6.0), 9.865_876_450_377e-10, 1e-6));
        assert!(close(normal_sf(-1.0), 0.841_344_746_068_542_9, 1e-6));
        assert!(close(erfc(-0.5), 1.520_499_877_813_046_5, 1e-6));
        assert_eq!(two_sided(f64::NAN), 1.0);
    }

    #[test]
    fn two_proportions_known_values() {
        // 50/100 against 70/100: se = sqrt(.25/100 + .21/100), z = 0.2 / se = 2.948839;
        // reference values from math.erfc (Python).
        let p = two_proportions(50, 100, 70, 100, 0.0);
        assert!(close(p, 0.003_189_699_706_216_875_6, 1e-5), "{p}");
        assert!(close(two_proportions(70, 100, 50, 100, 0.0), p, 1e-12));
        // Beyond a margin of 5 points: z = 0.15 / se.
        let p = two_proportions(50, 100, 70, 100, 0.05);
        assert!(close(p, 0.026_992_286_272_402_313, 1e-5), "{p}");
        // Equal shares of different totals: no evidence at all.
        assert!(close(
            two_proportions(300, 1000, 600, 2000, 0.0),
            1.0,
            1e-12
        ));
        assert_eq!(two_proportions(0, 100, 0, 100, 0.0), 1.0);
        assert_eq!(two_proportions(100, 100, 50, 50, 0.0), 1.0);
        assert_eq!(two_proportions(1, 0, 1, 10, 0.0), 1.0);
        // 0% against 100% has no unpooled variance, and is still a change.
        assert!(two_proportions(0, 100, 100, 100, 0.005) < 1e-12);
    }

    #[test]
    fn poisson_rates_known_values() {
        // 1000 against 1100 at the same rate: the first of 2100 is Binomial(2100, 1/2),
        // z = (1050 - 1000) / sqrt(2100 / 4) = 2.182179.
        let p = poisson_rates(1000, 99.0, 1100, 99.0, 0.0);
        assert!(close(p, 0.029_096_331_741_252_21, 1e-5), "{p}");
        // Beyond 2%: p = 1000 ... against 99 × 1.02.
        let p = poisson_rates(1000, 99.0, 1100, 99.0, 0.02);
        assert!(close(p, 0.083_890_871_679_513_33, 1e-5), "{p}");
        let p = poisson_rates(1100, 99.0, 1000, 99.0, 0.02);
        assert!(close(p, 0.085_545_167_825_177_79, 1e-5), "{p}");
        // Twice the rate and twice the samples is the same CPU time.
        assert!(close(
            poisson_rates(1000, 99.0, 2000, 198.0, 0.0),
            1.0,
            1e-9
        ));
        assert_eq!(poisson_rates(0, 99.0, 0, 99.0, 0.0), 1.0);
    }

    #[test]
    fn mann_whitney_known_values() {
        // Complete separation of 5 and 5: U = 25 for the larger side, mu = 12.5,
        // sigma = sqrt(25 * 11 / 12), z = (12.5 - 0.5) / sigma = 2.506718.
        let (u, z) = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(u, 25.0);
        assert!(close(z, 2.506_718_245_762_048_7, 1e-9), "{z}");
        assert!(close(two_sided(z), 0.012_185_780_355_344_818, 1e-5));
        let (u, z2) = mann_whitney(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(u, 0.0);
        assert!(close(z2, -z, 1e-12));
        // Ties: a = [1,2,2,3], b = [2,3,3,4]. Ranks: 1→1, 2→3 (×3), 3→6 (×3), 4→8.
        // U_b = 3+6+6+8 - 10 = 13, mu = 8, tie term = 24 + 24 = 48,
        // var = 16/12 * (9 - 48/56) = 10.857143, z = 4.5 / 3.295018 = 1.365698.
        let (u, z) = mann_whitney(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 3.0, 4.0]);
        assert_eq!(u, 13.0);
        assert!(close(z, 1.365_698_202_000_489, 1e-9), "{z}");
        assert!(close(two_sided(z), 0.172_033_708_921_822_96, 1e-5));
        assert_eq!(mann_whitney(&[5.0, 5.0], &[5.0, 5.0, 5.0]), (3.0, 0.0));
        assert_eq!(mann_whitney(&[], &[1.0]), (0.0, 0.0));
    }

    #[test]
    fn durations_must_move_beyond_the_margin() {
        assert!(close(
            durations_changed(&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10], 0.0, 0.0),
            0.012_185_780_355_344_818,
            1e-5
        ));
        // 4% longer throughout: clear at a 0% margin, weak against a 2% one.
        let a = [100, 102, 104, 106, 108, 110, 112, 114];
        let b = [104, 106, 108, 110, 112, 114, 116, 118];
        let p0 = durations_changed(&a, &b, 0.0, 0.0);
        let p2 = durations_changed(&a, &b, 0.02, 0.0);
        assert!(close(p0, 0.154_423_253_780_086_8, 1e-5), "{p0}");
        assert!(close(p2, 0.713_191_261_016_072, 1e-5), "{p2}");
        // 1000 spans 0.5% longer than 1000 others, measured exactly: significant without a
        // margin, not beyond 2%.
        let base: Vec<u64> = (0..1000).map(|i| 1_000_000 + i * 10).collect();
        let new: Vec<u64> = base.iter().map(|x| x + x / 200).collect();
        assert!(durations_changed(&base, &new, 0.0, 0.0) < 1e-6);
        assert!(durations_changed(&base, &new, 0.02, 0.0) > 0.5);
        // 20% longer: far beyond it.
        let slow: Vec<u64> = base.iter().map(|x| x + x / 5).collect();
        assert!(durations_changed(&base, &slow, 0.02, 0.0) < 1e-100);
        // 1 ms spans 60 us longer (6%): beyond 2%, not beyond a 100 us floor; 200 us (20%)
        // is beyond both.
        let later: Vec<u64> = base.iter().map(|x| x + 60_000).collect();
        assert!(durations_changed(&base, &later, 0.02, 0.0) < 1e-100);
        assert!(durations_changed(&base, &later, 0.02, 100_000.0) > 0.5);
        assert!(durations_changed(&base, &slow, 0.02, 100_000.0) < 1e-100);
    }

    #[test]
    fn holm_adjusts_in_steps() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        let expect = [0.03, 0.06, 0.06, 0.02];
        for (a, e) in adj.iter().zip(expect) {
            assert!(close(*a, e, 1e-12), "{adj:?}");
        }
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
        assert_eq!(holm(&[0.02, 0.3]), vec![0.04, 0.3]);
        assert_eq!(holm(&[0.6, 0.7, 0.01]), vec![1.0, 1.0, 0.03]);
        assert!(holm(&[]).is_empty());
    }
}
