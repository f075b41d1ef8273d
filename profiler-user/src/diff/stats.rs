//! The statistics `profiler diff` judges changes with, written out because they are short:
//! a two-proportion z-test for shares of samples, a Poisson rate test for CPU time, the
//! Mann-Whitney U test for span durations, and Holm's step-down correction for testing many
//! functions or spans at once.

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

/// Two-proportion z-test (pooled variance): is `k1/n1` different from `k2/n2`? Returns the
/// statistic (positive when the second share is larger) and the two-sided p-value. With no
/// samples on a side, or a share that is 0 or 1 on both, there is nothing to test: p = 1.
pub fn two_proportions(k1: u64, n1: u64, k2: u64, n2: u64) -> (f64, f64) {
    if n1 == 0 || n2 == 0 {
        return (0.0, 1.0);
    }
    let (k1f, n1f, k2f, n2f) = (k1 as f64, n1 as f64, k2 as f64, n2 as f64);
    let pooled = (k1f + k2f) / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return (0.0, 1.0);
    }
    let z = (k2f / n2f - k1f / n1f) / se;
    (z, two_sided(z))
}

/// Are two sample counts, taken at `f1` and `f2` samples per second of CPU, from the same CPU
/// time? Conditioned on their sum, the first is binomial with p = f1 / (f1 + f2) under the
/// null hypothesis; the normal approximation of that binomial gives the two-sided p-value.
/// Positive statistic: the second side used more CPU.
pub fn poisson_rates(n1: u64, f1: f64, n2: u64, f2: f64) -> (f64, f64) {
    let total = n1 as f64 + n2 as f64;
    if total == 0.0 || f1 <= 0.0 || f2 <= 0.0 {
        return (0.0, 1.0);
    }
    let p = f1 / (f1 + f2);
    let se = (total * p * (1.0 - p)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return (0.0, 1.0);
    }
    let z = (total * p - n1 as f64) / se;
    (z, two_sided(z))
}

/// Mann-Whitney U test (normal approximation with tie and continuity corrections): do values
/// of `b` tend to be larger or smaller than values of `a`? Returns the U of `b` and the
/// two-sided p-value; p = 1 when a side is empty or every value is tied.
pub fn mann_whitney(a: &[u64], b: &[u64]) -> (f64, f64) {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return (0.0, 1.0);
    }
    let mut all: Vec<(u64, bool)> = a
        .iter()
        .map(|&x| (x, false))
        .chain(b.iter().map(|&x| (x, true)))
        .collect();
    all.sort_unstable_by_key(|&(x, _)| x);
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
    let mu = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 || !var.is_finite() {
        return (u_b, 1.0);
    }
    let d = u_b - mu;
    // Continuity correction: half a step toward the mean.
    let z = (d.abs() - 0.5).max(0.0) * d.signum() / var.sqrt();
    (u_b, two_sided(z))
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
        // 50/100 against 70/100: pooled 0.6, se sqrt(0.24 * 0.02), z = 2.886751.
        let (z, p) = two_proportions(50, 100, 70, 100);
        assert!(close(z, 2.886_751_345_948_129, 1e-9), "{z}");
        assert!(close(p, 0.003_892_417_122_778_637, 1e-5), "{p}");
        let (z, p) = two_proportions(70, 100, 50, 100);
        assert!(z < 0.0 && close(p, 0.003_892_417_122_778_637, 1e-5));
        // Equal shares of different totals: no evidence at all.
        let (z, p) = two_proportions(300, 1000, 600, 2000);
        assert_eq!((z, p), (0.0, 1.0));
        assert_eq!(two_proportions(0, 100, 0, 100), (0.0, 1.0));
        assert_eq!(two_proportions(100, 100, 50, 50), (0.0, 1.0));
        assert_eq!(two_proportions(1, 0, 1, 10), (0.0, 1.0));
    }

    #[test]
    fn poisson_rates_known_values() {
        // 1000 against 1100 at the same rate: the first of 2100 is Binomial(2100, 1/2),
        // z = (1050 - 1000) / sqrt(2100 / 4) = 2.182179.
        let (z, p) = poisson_rates(1000, 99.0, 1100, 99.0);
        assert!(close(z, 2.182_178_902_359_924, 1e-9), "{z}");
        assert!(close(p, 0.029_096_331_741_252_21, 1e-5), "{p}");
        // Twice the rate and twice the samples is the same CPU time.
        let (z, p) = poisson_rates(1000, 99.0, 2000, 198.0);
        assert!(z.abs() < 1e-9 && close(p, 1.0, 1e-6));
        assert_eq!(poisson_rates(0, 99.0, 0, 99.0), (0.0, 1.0));
    }

    #[test]
    fn mann_whitney_known_values() {
        // Complete separation of 5 and 5: U = 25 for the larger side, mu = 12.5,
        // sigma = sqrt(25 * 11 / 12), z = (12.5 - 0.5) / sigma = 2.506718.
        let (u, p) = mann_whitney(&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]);
        assert_eq!(u, 25.0);
        assert!(close(p, 0.012_185_780_355_344_818, 1e-5), "{p}");
        let (u, p2) = mann_whitney(&[6, 7, 8, 9, 10], &[1, 2, 3, 4, 5]);
        assert_eq!(u, 0.0);
        assert!(close(p2, p, 1e-12));
        // Ties: a = [1,2,2,3], b = [2,3,3,4]. Ranks: 1→1, 2→3 (×3), 3→6 (×3), 4→8.
        // U_b = 3+6+6+8 - 10 = 13, mu = 8, tie term = 24 + 24 = 48,
        // var = 16/12 * (9 - 48/56) = 10.857143, z = 4.5 / 3.295018 = 1.365698.
        let (u, p) = mann_whitney(&[1, 2, 2, 3], &[2, 3, 3, 4]);
        assert_eq!(u, 13.0);
        assert!(close(p, 0.172_033_708_921_822_96, 1e-5), "{p}");
        assert_eq!(mann_whitney(&[5, 5], &[5, 5, 5]), (3.0, 1.0));
        assert_eq!(mann_whitney(&[], &[1]), (0.0, 1.0));
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
