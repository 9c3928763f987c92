//! The simulation's random numbers: xoshiro256** seeded through SplitMix64, so the same seed gives the
//! same stream on every run and every build (no dependency whose algorithm may change under us).
//!
//! Streams are keyed by what they decide (`Rng::keyed(&[seed, TAG, machine, day, visit])`) rather than
//! drawn from one shared stream: machines run concurrently, and a machine's traffic must not depend on
//! the order in which the runtime happened to schedule the others.

/// SplitMix64's finaliser: a good 64-bit mix, used both to seed and to combine key parts.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of text (FNV-1a, then mixed): keys a stream by an id such as a refund's.
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A stream for the key `parts` (order matters).
    pub(crate) fn keyed(parts: &[u64]) -> Rng {
        let mut h = 0x6A09_E667_F3BC_C908u64;
        for p in parts {
            h = mix(h ^ mix(*p));
        }
        let mut s = [0u64; 4];
        for (i, slot) in s.iter_mut().enumerate() {
            h = mix(h.wrapping_add(i as u64));
            *slot = h;
        }
        // xoshiro must not start from all zeros; `mix` of distinct inputs makes that impossible in
        // practice, but a fixed fallback costs nothing.
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [lo, hi] (inclusive).
    pub(crate) fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.saturating_add_unsigned(self.below(span))
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal deviate (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A Poisson count with mean `lambda` (Knuth below 30, a rounded normal above).
    pub(crate) fn poisson(&mut self, lambda: f64) -> u32 {
        // NaN and non-positive means both give nothing.
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0u32;
            let mut p = self.unit();
            while p > limit {
                k += 1;
                p *= self.unit();
            }
            return k;
        }
        let x = lambda + lambda.sqrt() * self.normal();
        x.round().max(0.0) as u32
    }

    /// An index drawn with probability proportional to `weights` (non-negative); the last index when
    /// they are all zero.
    pub(crate) fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_stream_and_keys_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::keyed(&[7, 1, 2]);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::keyed(&[7, 1, 2]);
        let b: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(Rng::keyed(&[7, 2, 1]).next_u64(), a[0]);
    }

    #[test]
    fn poisson_and_weighted_have_the_right_means() {
        let mut r = Rng::keyed(&[1]);
        let n = 20_000;
        for lambda in [3.0, 45.0] {
            let sum: u64 = (0..n).map(|_| u64::from(r.poisson(lambda))).sum();
            let mean = sum as f64 / f64::from(n);
            assert!((mean - lambda).abs() < lambda * 0.05, "{lambda}: {mean}");
        }
        let hits = (0..n).filter(|_| r.weighted(&[1.0, 3.0]) == 1).count();
        assert!((hits as f64 / f64::from(n) - 0.75).abs() < 0.02);
        assert!((0..1000).all(|_| (3..=5).contains(&r.between(3, 5))));
    }
}
