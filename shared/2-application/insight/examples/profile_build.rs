#![allow(clippy::unwrap_used)]
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
#[derive(Default, Clone, Copy)]
struct Fx(u64);
impl Fx { fn add(&mut self, w: u64) { self.0 = (self.0 ^ w).wrapping_mul(0xf135_7aea_2e62_a9c5); } }
impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks { let mut w = [0u8; 8]; w.copy_from_slice(c); self.add(u64::from_le_bytes(w)); }
        let rest = chunks.remainder();
        if !rest.is_empty() { let mut w = [0u8; 8]; w[..rest.len()].copy_from_slice(rest); self.add(u64::from_le_bytes(w)); }
    }
    fn write_u8(&mut self, i: u8) { self.add(i as u64); }
    fn write_u32(&mut self, i: u32) { self.add(i as u64); }
    fn write_u64(&mut self, i: u64) { self.add(i); }
    fn write_usize(&mut self, i: usize) { self.add(i as u64); }
    fn finish(&self) -> u64 { let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33) }
}
type B = BuildHasherDefault<Fx>;
fn main() {
    let year = vendpay_insight::Period::parse("2026-01-01", "2026-12-31", "+08:00").unwrap();
    let (facts, history) = vendpay_insight::synthetic::generate(&year, vendpay_insight::synthetic::Shape::YEAR).unwrap();
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let s: u64 = facts.iter().map(|f| f.amount).sum();
        eprintln!("traverse {:?} {s}", t.elapsed());
        let t = std::time::Instant::now();
        let s: usize = facts.iter().map(|f| f.id.len() + f.session.as_str().len() + f.device.as_str().len() + f.district.len()).sum();
        eprintln!("traverse strings {:?} {s}", t.elapsed());
        let t = std::time::Instant::now();
        let mut seen: HashSet<&str, B> = HashSet::default();
        seen.reserve(facts.len());
        let n = facts.iter().filter(|f| seen.insert(f.id.as_str())).count();
        eprintln!("seen set {:?} {n}", t.elapsed());
        let t = std::time::Instant::now();
        let mut seen2: HashSet<&str> = HashSet::default();
        seen2.reserve(facts.len());
        let n = facts.iter().filter(|f| seen2.insert(f.id.as_str())).count();
        eprintln!("seen set sip {:?} {n}", t.elapsed());
        let t = std::time::Instant::now();
        let mut hs: Vec<(u64, u32)> = facts.iter().enumerate().map(|(i, f)| { let mut h = Fx::default(); h.write(f.id.as_bytes()); (h.finish(), i as u32) }).collect();
        eprintln!("hash ids {:?}", t.elapsed());
        hs.sort_unstable();
        eprintln!("hash ids + sort {:?} {}", t.elapsed(), hs.len());
        let t = std::time::Instant::now();
        let mut set64: HashSet<u64, B> = HashSet::default();
        set64.reserve(facts.len());
        let n = facts.iter().filter(|f| { let mut h = Fx::default(); h.write(f.id.as_bytes()); set64.insert(h.finish()) }).count();
        eprintln!("u64 set {:?} {n}", t.elapsed());
        let t = std::time::Instant::now();
        let mut ses: HashMap<&str, u32, B> = HashMap::default();
        for f in &facts { let l = ses.len() as u32; ses.entry(f.session.as_str()).or_insert(l); }
        eprintln!("session intern {:?} {}", t.elapsed(), ses.len());
        let t = std::time::Instant::now();
        let mut dev: HashMap<&str, u32, B> = HashMap::default();
        for f in &facts { let l = dev.len() as u32; dev.entry(f.device.as_str()).or_insert(l); let l = dev.len() as u32; dev.entry(f.district.as_str()).or_insert(l); }
        eprintln!("device+district intern {:?} {}", t.elapsed(), dev.len());
        let t = std::time::Instant::now();
        let r = vendpay_insight::build(&year, &facts, &history);
        eprintln!("total {:?} {}", t.elapsed(), r.items.len());
    }
}
