//! Tiny deterministic generator for the "never panics" tests: no extra
//! crates, reproducible failures (the seed is in the test).

#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// xorshift64*
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }

    pub(crate) fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    /// Random edits (flip, insert, delete, duplicate a span) of `seed`,
    /// which reach deeper into a parser than uniform noise does.
    pub(crate) fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        let edits = 1 + self.below(4);
        for _ in 0..edits {
            let len = v.len();
            match self.below(5) {
                0 if len > 0 => {
                    let i = self.below(len);
                    v[i] = self.byte();
                }
                1 => {
                    let i = self.below(len + 1);
                    let b = self.byte();
                    v.insert(i, b);
                }
                2 if len > 0 => {
                    let i = self.below(len);
                    v.remove(i);
                }
                3 if len > 0 => {
                    let a = self.below(len);
                    let b = a + self.below(len - a).min(64);
                    let span = v[a..b].to_vec();
                    let at = self.below(v.len() + 1);
                    v.splice(at..at, span);
                }
                _ => {
                    let i = self.below(len + 1);
                    v.truncate(i);
                }
            }
        }
        v
    }
}
