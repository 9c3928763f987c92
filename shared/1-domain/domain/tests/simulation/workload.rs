//! The workload: customers, machines, Alipay and the queues on virtual time.
//!
//! One file on purpose: it is one decision table (what each actor may do next, and how likely), and
//! splitting it would part each action from its odds and from the faults that interleave with it.

use super::*;

// ------------------------------------------------------------------------------------------------
// The scenario: customers, machines, Alipay and the queues, on virtual time.
// ------------------------------------------------------------------------------------------------

pub(crate) enum Event {
    /// A customer walks up to a machine.
    Customer {
        device: usize,
    },
    Deliver(Command),
    /// The refund executor's attempt number `attempt` at a refund.
    RefundAttempt {
        refund: RefundId,
        attempt: u32,
    },
    Sweep,
    /// An operator (or the machine itself) acts on a machine's inventory.
    Operator {
        device: usize,
        kind: OpKind,
    },
}

/// What an operator does to a machine's inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// A first planogram, then a refill of every slot.
    Setup,
    /// A refill: some slots, mostly to capacity.
    Refill,
    /// The machine's own count of every slot (often fewer than the ledger promised).
    Count,
    /// A new planogram: slots kept, re-stocked with another product, resized, re-priced, added, dropped.
    Replace,
    /// A request with one defect: it must be refused whole and change nothing.
    Broken,
    /// The machine counts 0 items in this slot.
    Miscount { slot: Slot },
}

/// The slots a planogram draws from; the customers also name A7–A9 and B7–B9, always outside it.
const SLOT_POOL: [&str; 13] = [
    "A1", "A2", "A3", "A4", "A5", "A6", "B1", "B2", "B3", "B4", "B5", "B6", "C1",
];

pub(crate) struct Sim {
    pub(crate) rng: Rng,
    pub(crate) now: i64,
    pub(crate) queue: BinaryHeap<Reverse<(i64, u64)>>,
    pub(crate) events: HashMap<u64, Event>,
    pub(crate) seq: u64,
    pub(crate) world: World,
    pub(crate) auditor: Auditor,
    pub(crate) trace: Vec<String>,
    pub(crate) next_id: u64,
    pub(crate) steps: u64,
    pub(crate) used_ids: HashMap<usize, Vec<String>>,
    /// An Alipay outage (absolute ms, from..to): no answer in it is verified.
    pub(crate) outage: Option<(i64, i64)>,
}

pub(crate) const SECOND: i64 = 1000;
pub(crate) const MINUTE: i64 = 60 * SECOND;

impl Sim {
    pub(crate) fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let currencies = [Currency::Cny, Currency::Jpy, Currency::Usd];
        let modes = [Mode::PayFirst, Mode::PurchaseFirst, Mode::Mixed];
        let n = rng.range(1, 4) as usize;
        let machines = (0..n)
            .map(|i| MachineRow {
                device: Device {
                    id: DeviceId::parse(format!("vm-{i}")).expect("valid id"),
                    mode: *rng.pick(&modes),
                    currency: *rng.pick(&currencies),
                },
                current: None,
                slots: BTreeMap::new(),
            })
            .collect();
        // One catalogue for the fleet: each product sold in one currency.
        let mut catalogue = BTreeMap::new();
        for currency in currencies {
            for name in ["cola", "water", "chips", "gum", "tea"] {
                let sku = Sku::parse(format!("{name}-{}", currency.code())).expect("sku");
                let price = Money::new(rng.range(100, 900), currency).expect("price");
                let p = vendpay_domain::inventory::product(sku.clone(), name, price, None)
                    .expect("product");
                catalogue.insert(sku, p);
            }
        }
        // Mostly the default windows; sometimes short ones, to stress overlaps.
        let windows = if rng.pct(70) {
            Windows::default()
        } else {
            Windows {
                pay_first: Duration::from_secs(rng.range(5, 120)),
                purchase_first: Duration::from_secs(rng.range(2, 30)),
                order_payment: Duration::from_secs(rng.range(5, 60)),
            }
        };
        let start = 1_700_000_000_000;
        // Some seeds meet an Alipay outage of over an hour, so refunds go unresolved long enough to be
        // raised stuck.
        let outage = rng.pct(10).then(|| {
            let from = start + rng.range(0, 40 * MINUTE as u64) as i64;
            (
                from,
                from + rng.range(70 * MINUTE as u64, 180 * MINUTE as u64) as i64,
            )
        });
        Sim {
            rng,
            now: start,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            world: World {
                machines,
                sessions: BTreeMap::new(),
                trades: HashMap::new(),
                requests: HashMap::new(),
                refunds: HashMap::new(),
                windows,
                alipay: HashMap::new(),
                catalogue,
            },
            auditor: Auditor::default(),
            trace: Vec::new(),
            next_id: 0,
            steps: 0,
            used_ids: HashMap::new(),
            outage,
        }
    }

    pub(crate) fn stat(&mut self, key: &str) {
        *self.auditor.stats.entry(key.into()).or_default() += 1;
    }

    pub(crate) fn at(&mut self, delay_ms: i64, event: Event) {
        self.seq += 1;
        self.queue
            .push(Reverse((self.now + delay_ms.max(0), self.seq)));
        self.events.insert(self.seq, event);
    }

    pub(crate) fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    pub(crate) fn money(&mut self, device: usize, lo: u64, hi: u64) -> Money {
        let currency = self.world.machines[device].device.currency;
        Money::new(self.rng.range(lo, hi), currency).expect("small amount")
    }

    /// A payment by a customer: Alipay notifies once, maybe again 200 ms later, maybe minutes or hours
    /// later (its resend schedule), in any order.
    /// Returns the trade and when its first notification arrives (ms from now).
    pub(crate) fn pay(
        &mut self,
        device: usize,
        amount: Money,
        buyer: Option<BuyerId>,
        delay: i64,
    ) -> (TradeNo, i64) {
        let trade = self.id("2026112522");
        let amount = if self.rng.pct(3) {
            // A payment in a currency the machine does not take.
            let other = if amount.currency() == Currency::Eur {
                Currency::Gbp
            } else {
                Currency::Eur
            };
            Money::new(amount.minor(), other).expect("small")
        } else {
            amount
        };
        let trade_no = TradeNo::parse(trade.clone()).expect("trade");
        let payment = IncomingPayment {
            trade_no: trade_no.clone(),
            merchant_trade_no: MerchantTradeNo::parse(format!("M{trade}")).expect("out trade"),
            amount,
            buyer_id: buyer,
            paid_at: Timestamp::from_millis(self.now + delay),
        };
        let first = delay + self.rng.range(50, 3000) as i64;
        self.at(
            first,
            Event::Deliver(Command::Notify {
                device,
                payment: payment.clone(),
            }),
        );
        if self.rng.pct(30) {
            let again = match self.rng.range(0, 3) {
                0 => 200,
                1 => 2 * MINUTE,
                2 => 10 * MINUTE,
                _ => 3 * 60 * MINUTE,
            };
            // Sometimes the duplicate overtakes the original.
            let at = if self.rng.pct(20) {
                delay
            } else {
                first + again
            };
            self.at(at, Event::Deliver(Command::Notify { device, payment }));
        }
        (trade_no, first)
    }

    /// An id this machine has used before (as a purchase request or an order), to collide with.
    pub(crate) fn reused_id(&mut self, device: usize) -> Option<String> {
        let used = self.used_ids.get(&device)?;
        if used.is_empty() {
            return None;
        }
        let i = (self.rng.next() % used.len() as u64) as usize;
        used.get(i).cloned()
    }

    pub(crate) fn remember_id(&mut self, device: usize, id: &str) {
        self.used_ids.entry(device).or_default().push(id.to_owned());
    }

    pub(crate) fn buyer(&mut self) -> Option<BuyerId> {
        if self.rng.pct(30) {
            None
        } else {
            let n = self.rng.range(1, 4);
            Some(BuyerId::parse(format!("2088{n:012}")).expect("buyer"))
        }
    }

    /// The price a machine names for `slot`: for a slot of the planogram mostly none (the slot's is
    /// used) or the right one, sometimes a wrong one (to be refused `price_mismatch`); outside it
    /// mostly a price of its own, sometimes none (to be refused `missing_price`).
    pub(crate) fn asked_price(
        &mut self,
        device: usize,
        slot: &Slot,
        lo: u64,
        hi: u64,
    ) -> Option<Money> {
        match self.world.slot_price(device, slot) {
            Some(p) => match self.rng.range(0, 99) {
                0..=49 => None,
                50..=86 => Some(p),
                _ => {
                    let other = self.rng.range(lo, hi);
                    let other = if other == p.minor() { other + 1 } else { other };
                    Some(Money::new(other, p.currency()).expect("price"))
                }
            },
            None if self.rng.pct(4) => None,
            None => Some(self.money(device, lo, hi)),
        }
    }

    /// A slot a customer picks: mostly one the planograms draw from (`row`1–6), sometimes one they
    /// never hold (`row`7–9).
    pub(crate) fn slot_named(&mut self, row: char) -> Slot {
        let n = if self.rng.pct(80) {
            self.rng.range(1, 6)
        } else {
            self.rng.range(7, 9)
        };
        Slot::parse(format!("{row}{n}")).expect("slot")
    }

    pub(crate) fn customer(&mut self, device: usize) {
        let mode = self.world.machines[device].device.mode;
        let purchase_first = match mode {
            Mode::PayFirst => false,
            Mode::PurchaseFirst => true,
            Mode::Mixed => self.rng.pct(50),
        };
        let window = if purchase_first {
            self.world.windows.order_payment.as_millis() as i64
        } else {
            self.world.windows.pay_first.as_millis() as i64
        };
        let buyer = self.buyer();
        if purchase_first {
            let fresh = self.id("ord");
            let id = match self.rng.pct(5) {
                true => self.reused_id(device).unwrap_or(fresh),
                false => fresh,
            };
            self.remember_id(device, &id);
            let order = OrderId::parse(id).expect("order");
            let order_session =
                SessionId::for_order(&self.world.machines[device].device.id, &order);
            let slot = self.slot_named('A');
            let asked = self.asked_price(device, &slot, 100, 900);
            // What the customer will be asked to pay: the slot's price, else the machine's.
            let price = match asked.or_else(|| self.world.slot_price(device, &slot)) {
                Some(p) => p,
                None => self.money(device, 100, 900),
            };
            self.at(
                0,
                Event::Deliver(Command::Order {
                    device,
                    order: order.clone(),
                    slot: slot.clone(),
                    price: asked,
                }),
            );
            if self.rng.pct(10) {
                // The machine retries the order (lost answer).
                let d = self.rng.range(100, 3000) as i64;
                self.at(
                    d,
                    Event::Deliver(Command::Order {
                        device,
                        order: order.clone(),
                        slot,
                        price: asked,
                    }),
                );
            }
            let roll = self.rng.range(0, 99);
            let amount = match roll {
                0..=59 => Some(price),
                60..=74 => Some(self.money(device, price.minor() + 1, price.minor() + 500)),
                75..=84 => Some(self.money(device, 1, price.minor() - 1)),
                _ => None,
            };
            let late = self.rng.pct(8);
            let delay = if late {
                window + self.rng.range(1, 60_000) as i64
            } else {
                self.rng.range(1_000, window.max(2_000) as u64) as i64
            };
            if let Some(amount) = amount {
                self.pay(device, amount, buyer, delay);
            }
            if self.rng.pct(5) {
                let d = self.rng.range(0, window as u64) as i64;
                let session = self.rng.pct(60).then(|| order_session.clone());
                self.at(d, Event::Deliver(Command::End { device, session }));
            }
        } else {
            let amount = self.money(device, 100, 2000);
            let (trade, first) = self.pay(device, amount, buyer.clone(), 0);
            let session = SessionId::for_payment(&trade);
            let mut last_paid = first;
            if self.rng.pct(6) {
                // A buyer feeding the machine a cent at a time, far more often than a session takes.
                let n = self.rng.range(51, 110);
                let mut d = first;
                for _ in 0..n {
                    d += self.rng.range(100, 1_500) as i64;
                    let amount = self.money(device, 1, 3);
                    let (_, f) = self.pay(device, amount, buyer.clone(), d);
                    last_paid = last_paid.max(f);
                }
            }
            if self.rng.pct(15) {
                // A purchase in the last second and a half before the deadline, then a slow vend.
                let request = RequestId::parse(self.id("req")).expect("request");
                let d = last_paid + window - self.rng.range(1, 1_500) as i64;
                let slot = Slot::parse("C1").expect("slot");
                let price = self.asked_price(device, &slot, 50, 300);
                let cmd = Command::Purchase {
                    device,
                    request,
                    slot,
                    price,
                    session: Some(session.clone()),
                };
                self.at(d, Event::Deliver(cmd));
            }
            if self.rng.pct(20) {
                // A top-up, usually by the same buyer.
                let b = if self.rng.pct(80) {
                    buyer
                } else {
                    self.buyer()
                };
                let amount = self.money(device, 100, 1000);
                let d = self.rng.range(5_000, window as u64 + 30_000) as i64;
                self.pay(device, amount, b, d);
            }
            let purchases = self.rng.range(0, 4);
            for _ in 0..purchases {
                let fresh = self.id("req");
                let id = match self.rng.pct(3) {
                    true => self.reused_id(device).unwrap_or(fresh),
                    false => fresh,
                };
                self.remember_id(device, &id);
                let request = RequestId::parse(id).expect("request");
                let slot = self.slot_named('B');
                let price = self.asked_price(device, &slot, 50, 900);
                let d = self.rng.range(2_000, window as u64 + 20_000) as i64;
                let cmd = Command::Purchase {
                    device,
                    request,
                    slot,
                    price,
                    session: self.rng.pct(70).then(|| session.clone()),
                };
                self.at(d, Event::Deliver(cmd.clone()));
                if self.rng.pct(15) {
                    let again = d + self.rng.range(0, 5_000) as i64;
                    self.at(again, Event::Deliver(cmd));
                }
            }
            if self.rng.pct(25) {
                let d = self.rng.range(3_000, window as u64 + 10_000) as i64;
                let aimed = self.rng.pct(70).then(|| session.clone());
                self.at(
                    d,
                    Event::Deliver(Command::End {
                        device,
                        session: aimed,
                    }),
                );
            }
            if self.rng.pct(10) {
                // The end (or a purchase) replayed long after: from the queue, a retry after a lost
                // answer, or a replay inside the signature window, once the next customer has paid.
                let d = window + self.rng.range(0, 10 * MINUTE as u64) as i64;
                let cmd = if self.rng.pct(60) {
                    Command::End {
                        device,
                        session: Some(session.clone()),
                    }
                } else {
                    let slot = Slot::parse("B1").expect("slot");
                    Command::Purchase {
                        device,
                        request: RequestId::parse(self.id("req")).expect("request"),
                        price: self.asked_price(device, &slot, 1, 50),
                        slot,
                        session: Some(session.clone()),
                    }
                };
                self.at(d, Event::Deliver(cmd));
            }
        }
    }

    /// The machine vends an approved purchase or a paid order and reports it — or never does.
    pub(crate) fn vend(&mut self, device: usize, request: RequestId) {
        let roll = self.rng.range(0, 99);
        if roll >= 95 {
            return; // the report is lost: the deadline must settle the hold
        }
        let delivered = roll < 80;
        let window = self.world.windows.purchase_first.as_millis() as u64;
        let d = match self.rng.range(0, 99) {
            0..=69 => self.rng.range(100, 10_000.min(window.max(200))) as i64,
            // Slow, but in time: the hold must still be there.
            70..=84 => self.rng.range(
                window * 6 / 10,
                window.saturating_sub(50).max(window * 6 / 10),
            ) as i64,
            _ => self.rng.range(window, window + 20_000) as i64,
        };
        let cmd = Command::Vend {
            device,
            request,
            delivered,
        };
        self.at(d, Event::Deliver(cmd.clone()));
        if self.rng.pct(10) {
            let again = d + self.rng.range(0, 60_000) as i64;
            self.at(again, Event::Deliver(cmd));
        }
    }

    /// A capacity: mostly tiny, so slots sell out often.
    fn capacity(&mut self) -> u32 {
        if self.rng.pct(85) {
            self.rng.range(1, 4) as u32
        } else {
            self.rng.range(5, 12) as u32
        }
    }

    /// The products sold in this machine's currency.
    fn skus(&self, device: usize) -> Vec<Sku> {
        let currency = self.world.machines[device].device.currency;
        self.world
            .catalogue
            .values()
            .filter(|p| p.price.currency() == currency)
            .map(|p| p.sku.clone())
            .collect()
    }

    /// Whether a session of the machine still holds a reservation of `slot`.
    fn promised(&self, device: usize, slot: &Slot) -> bool {
        let id = &self.world.machines[device].device.id;
        self.world.sessions.values().any(|s| {
            &s.device_id == id
                && (s
                    .purchases
                    .iter()
                    .any(|p| p.reserved && p.status == PurchaseStatus::Held && &p.slot == slot)
                    || s.order().is_some_and(|o| {
                        o.reserved && o.status == OrderStatus::AwaitingPayment && &o.slot == slot
                    }))
        })
    }

    /// A new planogram for the machine, drawn from its current one: most slots kept (some with another
    /// product, capacity or price), some dropped, some added. A slot dropped while one of its items
    /// was promised is not added back while the promise stands: the domain would end that promise
    /// (`Release`, `Deliver`) on the new slot's row, which never reserved it. `SIM_READD=1` lifts this
    /// (seed 1050 then fails: a `Release` of an item of A4 that has none reserved).
    fn planogram_spec(&mut self, device: usize) -> Vec<SlotSpec> {
        let skus = self.skus(device);
        let readd = std::env::var("SIM_READD").is_ok_and(|v| v == "1");
        let mut spec = Vec::new();
        for name in SLOT_POOL {
            let slot = Slot::parse(name).expect("slot");
            let present = self.world.machines[device].slots.get(&slot).cloned();
            let include = match present {
                Some(_) => self.rng.pct(85),
                None => self.rng.pct(60),
            };
            if !include {
                continue;
            }
            if present.is_none() && !readd && self.promised(device, &slot) {
                self.stat("planogram did not add back a slot with a promise outstanding");
                continue;
            }
            let (sku, capacity, price) = match present {
                Some(r) => {
                    let sku = if self.rng.pct(15) {
                        self.rng.pick(&skus).clone()
                    } else {
                        r.sku
                    };
                    let capacity = if self.rng.pct(30) {
                        self.capacity()
                    } else {
                        r.capacity
                    };
                    let price = if self.rng.pct(20) {
                        self.rng.pct(50).then(|| self.money(device, 100, 900))
                    } else {
                        r.price
                    };
                    (sku, capacity, price)
                }
                None => {
                    let sku = self.rng.pick(&skus).clone();
                    let capacity = self.capacity();
                    let price = self.rng.pct(25).then(|| self.money(device, 100, 900));
                    (sku, capacity, price)
                }
            };
            spec.push(SlotSpec {
                slot,
                sku,
                capacity,
                price,
            });
        }
        spec
    }

    /// New counts for the machine's slots: a refill (some slots, mostly to capacity) or the machine's
    /// own count of every slot (anything from 0 to capacity, often below what is promised).
    fn counts(&mut self, device: usize, refill: bool) -> Vec<StockCount> {
        let rows: Vec<(Slot, u32)> = self.world.machines[device]
            .slots
            .values()
            .map(|r| (r.slot.clone(), r.capacity))
            .collect();
        let mut counts = Vec::new();
        for (slot, capacity) in rows {
            let stock = if !refill {
                self.rng.range(0, capacity as u64) as u32
            } else if !self.rng.pct(70) {
                continue;
            } else if self.rng.pct(80) {
                capacity
            } else {
                self.rng.range(0, capacity as u64) as u32
            };
            counts.push(StockCount { slot, stock });
        }
        counts
    }

    /// An operator's request with exactly one defect.
    fn broken(&mut self, device: usize) -> Operator {
        let rows: Vec<SlotStock> = self.world.machines[device]
            .slots
            .values()
            .cloned()
            .collect();
        if self.rng.pct(50) {
            let counts = match (rows.first(), self.rng.range(0, 2)) {
                (Some(r), 0) => vec![StockCount {
                    slot: r.slot.clone(),
                    stock: r.capacity + 1,
                }],
                (Some(r), 1) => vec![
                    StockCount {
                        slot: r.slot.clone(),
                        stock: 0,
                    },
                    StockCount {
                        slot: r.slot.clone(),
                        stock: 0,
                    },
                ],
                _ => vec![StockCount {
                    slot: Slot::parse("Z9").expect("slot"),
                    stock: 1,
                }],
            };
            return Operator::Restock { device, counts };
        }
        let mut spec = self.planogram_spec(device);
        let skus = self.skus(device);
        let foreign = self
            .world
            .catalogue
            .values()
            .find(|p| !skus.contains(&p.sku))
            .map(|p| p.price)
            .expect("a product in another currency");
        let mut good = SlotSpec {
            slot: Slot::parse("C1").expect("slot"),
            sku: self.rng.pick(&skus).clone(),
            capacity: 2,
            price: None,
        };
        spec.retain(|s| s.slot != good.slot);
        match self.rng.range(0, 4) {
            0 => good.sku = Sku::parse("not-in-the-catalogue").expect("sku"),
            1 => good.capacity = 0,
            2 => good.capacity = vendpay_domain::inventory::MAX_CAPACITY + 1,
            3 => good.price = Some(foreign),
            _ => spec.push(good.clone()),
        }
        spec.push(good);
        Operator::Planogram { device, spec }
    }

    /// Carries out an operator's request (or two, for a first set-up).
    pub(crate) fn operator(
        &mut self,
        seed: u64,
        device: usize,
        kind: OpKind,
    ) -> Result<(), String> {
        match kind {
            OpKind::Setup => {
                let spec = self.planogram_spec(device);
                self.operate(seed, Operator::Planogram { device, spec })?;
                let counts = self.counts(device, true);
                self.operate(seed, Operator::Restock { device, counts })
            }
            OpKind::Refill | OpKind::Count => {
                if self.world.machines[device].slots.is_empty() {
                    return Ok(());
                }
                let counts = self.counts(device, kind == OpKind::Refill);
                self.operate(seed, Operator::Restock { device, counts })
            }
            OpKind::Replace => {
                let spec = self.planogram_spec(device);
                self.operate(seed, Operator::Planogram { device, spec })
            }
            OpKind::Broken => {
                let op = self.broken(device);
                self.operate(seed, op)
            }
            OpKind::Miscount { slot } => {
                if !self.world.machines[device].slots.contains_key(&slot) {
                    return Ok(());
                }
                let counts = vec![StockCount { slot, stock: 0 }];
                self.operate(seed, Operator::Restock { device, counts })
            }
        }
    }

    /// One operator's request: decided by the domain, refused exactly when it has a defect, written
    /// conditionally, then every slot audited.
    pub(crate) fn operate(&mut self, seed: u64, op: Operator) -> Result<(), String> {
        self.steps += 1;
        let result = self.world.operate(&op);
        self.trace.push(format!(
            "t={} {op:?} -> {:?}",
            self.now,
            result
                .as_ref()
                .map(|w| (w.write.len(), w.remove.len()))
                .map_err(|e| e.code())
        ));
        let defects = self.auditor.defects(&self.world, &op);
        let what = match op {
            Operator::Planogram { .. } => "planogram",
            Operator::Restock { .. } => "restock",
        };
        match result {
            Ok(w) if defects.is_empty() => {
                self.auditor.book_operator(&self.world, &op);
                if let Err(e) = self.world.write_slots(op.device(), &w) {
                    return Err(self.fail(seed, &e));
                }
            }
            Ok(_) => {
                return Err(self.fail(seed, &format!("{what} accepted despite {defects:?}")));
            }
            Err(e) if defects.contains(&e.code()) => {
                self.stat(&format!("{what} refused"));
                self.stat(&format!("{what} refused {}", e.code()));
            }
            Err(e) => {
                return Err(self.fail(
                    seed,
                    &format!(
                        "{what} refused {} ({e}), its defects being {defects:?}",
                        e.code()
                    ),
                ));
            }
        }
        self.auditor
            .audit_slots(&self.world)
            .map_err(|e| self.fail(seed, &e))
    }

    pub(crate) fn fail(&self, seed: u64, msg: &str) -> String {
        let tail: Vec<_> = self.trace.iter().rev().take(25).rev().cloned().collect();
        format!(
            "seed {seed}: {msg}\nreplay: SIM_SEED={seed} cargo test -p vendpay-domain --test simulation\nlast steps:\n  {}",
            tail.join("\n  ")
        )
    }

    pub(crate) fn step(&mut self, seed: u64, cmd: Command) -> Result<(), String> {
        let now = Timestamp::from_millis(self.now);
        self.steps += 1;
        let expect = self.auditor.expect(&self.world, &cmd, now);
        let decision = self.world.decide(&cmd, now);
        self.trace.push(format!(
            "t={} {cmd:?} -> {:?}",
            self.now,
            decision.as_ref().map(|t| &t.reply)
        ));
        let t = match decision {
            Ok(t) => t,
            Err(Rejection::Inconsistent(e)) => {
                return Err(self.fail(seed, &format!("inconsistent: {e}")))
            }
            Err(Rejection::WrongDevice { .. }) => return Err(self.fail(seed, "wrong device")),
            Err(e) => {
                // Inventory refusals (price, sold out) must be the ones the rules demand.
                if let Err(msg) = self.auditor.check_refusal(&expect, &e) {
                    return Err(self.fail(seed, &msg));
                }
                if let Rejection::RequestConflict(_) = e {
                    *self
                        .auditor
                        .stats
                        .entry("id reused across orders and purchases: refused".into())
                        .or_default() += 1;
                }
                // Refusals of machine requests that make no sense right now are normal answers.
                return Ok(());
            }
        };
        if let Err(e) = self.auditor.check_accepted(&self.world, &expect, &cmd, &t) {
            return Err(self.fail(seed, &e));
        }
        let before = match self.world.apply(&cmd, &t) {
            Ok(before) => before,
            Err(e) => return Err(self.fail(seed, &e)),
        };
        if let Err(e) = self.auditor.check(&self.world, &cmd, &t, self.now) {
            return Err(self.fail(seed, &e));
        }
        if let Err(e) = self.auditor.facts.record(&t, &before, now) {
            return Err(self.fail(seed, &e));
        }
        if let Err(e) = self
            .auditor
            .check_stock(&self.world, &cmd, &t, expect, &before)
            .and_then(|()| self.auditor.audit_slots(&self.world))
        {
            return Err(self.fail(seed, &e));
        }
        let extra = match &cmd {
            Command::End {
                session: Some(_), ..
            } if t.is_noop() => Some("end for a session no longer current: no-op"),
            Command::Purchase {
                session: Some(_), ..
            } if t.is_noop() && !t.effects.is_empty() => {
                Some("purchase for a session no longer current: declined")
            }
            Command::Purchase { .. }
                if t.effects
                    .iter()
                    .any(|e| matches!(e, Effect::Approve { .. }))
                    && t.effects
                        .iter()
                        .any(|e| matches!(e, Effect::ScheduleDeadline { .. })) =>
            {
                Some("approval moved the deadline")
            }
            _ => None,
        };
        if let Some(k) = extra {
            *self.auditor.stats.entry(k.into()).or_default() += 1;
        }
        // Applied twice, a command changes nothing the second time and gives the same answer.
        match self.world.decide(&cmd, now) {
            Ok(again) if again.is_noop() && again.effects.is_empty() && again.reply == t.reply => {}
            other => {
                return Err(self.fail(
                    seed,
                    &format!("not idempotent: second application gave {other:?}"),
                ))
            }
        }
        self.react(&cmd, &t);
        Ok(())
    }

    /// What the rest of the system does with a transition's effects and reply.
    pub(crate) fn react(&mut self, cmd: &Command, t: &Transition) {
        for e in &t.effects {
            match e {
                Effect::ScheduleDeadline { session, at } => {
                    let due = at.millis() - self.now;
                    let late = match self.rng.range(0, 99) {
                        0..=79 => self.rng.range(0, 2_000) as i64,
                        80..=94 => self.rng.range(2_000, 90_000) as i64,
                        _ => -(self.rng.range(1, 3_000) as i64), // early: must be harmless
                    };
                    self.at(
                        due + late,
                        Event::Deliver(Command::Deadline {
                            session: session.clone(),
                        }),
                    );
                    if self.rng.pct(10) {
                        let d = due + late + self.rng.range(0, 30_000) as i64;
                        self.at(
                            d,
                            Event::Deliver(Command::Deadline {
                                session: session.clone(),
                            }),
                        );
                    }
                }
                Effect::IssueRefund { refund_id, .. } => {
                    let d = self.rng.range(0, 2_000) as i64;
                    self.at(
                        d,
                        Event::RefundAttempt {
                            refund: refund_id.clone(),
                            attempt: 1,
                        },
                    );
                }
                Effect::Approve { request_id, .. } => {
                    let device = match cmd {
                        Command::Purchase { device, .. } | Command::Notify { device, .. } => {
                            *device
                        }
                        _ => continue,
                    };
                    self.vend(device, request_id.clone());
                }
                // While an item is promised: now and then the machine's count of its slot is wrong
                // (an item taken out by hand, a refill missed) and it reports 0 before the vend, so the
                // vend takes an item from an empty slot; or an operator replaces the planogram.
                Effect::Stock {
                    slot,
                    change: StockChange::Reserve,
                    ..
                } => {
                    let device = match cmd {
                        Command::Purchase { device, .. } | Command::Order { device, .. } => *device,
                        _ => continue,
                    };
                    let kind = match self.rng.range(0, 99) {
                        0..=7 => OpKind::Miscount { slot: slot.clone() },
                        8..=11 => OpKind::Replace,
                        _ => continue,
                    };
                    let d = self.rng.range(0, 3_000) as i64;
                    if kind == OpKind::Replace && self.rng.pct(50) {
                        // A planogram put right a moment later: a dropped slot may come back.
                        let again = d + self.rng.range(500, 5_000) as i64;
                        self.at(
                            again,
                            Event::Operator {
                                device,
                                kind: OpKind::Replace,
                            },
                        );
                    }
                    self.at(d, Event::Operator { device, kind });
                }
                _ => {}
            }
        }
    }

    /// The refund executor's attempt: Alipay acts on the request (if it reaches it) and answers, verified
    /// or not; the ledger records a verified verdict, or the attempt as unresolved and retries later.
    pub(crate) fn attempt_refund(
        &mut self,
        seed: u64,
        refund: RefundId,
        attempt: u32,
    ) -> Result<(), String> {
        let stored =
            self.world.refund(&refund).cloned().ok_or_else(|| {
                self.fail(seed, &format!("refund {refund} attempted but not stored"))
            })?;
        self.auditor
            .check_attempt(&stored)
            .map_err(|e| self.fail(seed, &e))?;
        if stored.status.is_final() {
            return Ok(());
        }
        let outage = self
            .outage
            .is_some_and(|(from, to)| (from..to).contains(&self.now));
        // After a few attempts, outside an outage, the request gets through and the answer is verified.
        let forced = attempt >= 6 && !outage;
        let before = self.world.alipay.get(&refund).copied();
        let reached = forced
            || if outage {
                self.rng.pct(50) // Alipay acts, its answer is lost
            } else {
                !self.rng.pct(10)
            };
        if reached && before.is_none() {
            let acted = if !forced && self.rng.pct(4) {
                AlipayRefund::Refused
            } else {
                AlipayRefund::Paid
            };
            self.world.alipay.insert(refund.clone(), acted);
        }
        let truth = self.world.alipay.get(&refund).copied();
        let verified = reached && !outage && (forced || !self.rng.pct(25));
        // Refunding the whole trade closes it: a retry after the lost answer may then be refused.
        let whole_trade = self
            .world
            .refunds
            .get(&refund)
            .and_then(|s| self.world.sessions.get(s))
            .is_some_and(|s| {
                s.payments
                    .iter()
                    .any(|p| p.trade_no == stored.trade_no && p.amount == stored.amount)
            });
        let mut closed_by_itself = false;
        let outcome = match truth {
            _ if !verified => RefundOutcome::Unknown,
            Some(AlipayRefund::Paid)
                if before == Some(AlipayRefund::Paid) && whole_trade && self.rng.pct(8) =>
            {
                closed_by_itself = true; // TRADE_HAS_CLOSE, closed by this very refund
                RefundOutcome::FailedPermanently
            }
            Some(AlipayRefund::Paid) => RefundOutcome::Succeeded,
            Some(AlipayRefund::Refused) => RefundOutcome::FailedPermanently,
            None => {
                return Err(self.fail(
                    seed,
                    &format!("a verified answer about {refund}, which Alipay never received"),
                ))
            }
        };
        if outage {
            self.stat("refund attempted in an Alipay outage");
        }
        if outcome == RefundOutcome::Unknown {
            self.stat("refund verdict unknown");
            if truth == Some(AlipayRefund::Paid) {
                self.stat("refund verdict unknown, Alipay paid");
            }
        } else if closed_by_itself {
            self.stat("refund refused after Alipay paid (trade closed)");
        } else if before == Some(AlipayRefund::Paid) {
            self.stat("refund retry answered already refunded");
        }
        let cmd = Command::RefundResult {
            refund: refund.clone(),
            outcome,
        };
        self.step(seed, cmd.clone())?;
        if outcome == RefundOutcome::Unknown {
            self.step(
                seed,
                Command::RefundUnresolved {
                    refund: refund.clone(),
                },
            )?;
            let backoff = (1_000i64 << attempt.min(11)) + self.rng.range(0, 1_000) as i64;
            self.at(
                backoff,
                Event::RefundAttempt {
                    refund,
                    attempt: attempt + 1,
                },
            );
        } else if closed_by_itself {
            // The verified success of the earlier send, whose answer was lost, arrives late.
            let d = self.rng.range(SECOND as u64, 10 * MINUTE as u64) as i64;
            self.at(
                d,
                Event::Deliver(Command::RefundResult {
                    refund,
                    outcome: RefundOutcome::Succeeded,
                }),
            );
        } else if self.rng.pct(5) {
            // Alipay's answer repeated (a retry raced the first answer).
            self.at(500, Event::Deliver(cmd));
        }
        Ok(())
    }

    pub(crate) fn run(&mut self, seed: u64) -> Result<(), String> {
        let horizon = 40 * MINUTE;
        for device in 0..self.world.machines.len() {
            // Most machines get a planogram before their first customer; some never do.
            if self.rng.pct(80) {
                self.at(
                    0,
                    Event::Operator {
                        device,
                        kind: OpKind::Setup,
                    },
                );
            }
            for _ in 0..self.rng.range(1, 6) {
                let d = self.rng.range(0, (horizon + 10 * MINUTE) as u64) as i64;
                let kind = match self.rng.range(0, 99) {
                    0..=49 => OpKind::Refill,
                    50..=74 => OpKind::Count,
                    75..=89 => OpKind::Replace,
                    _ => OpKind::Broken,
                };
                self.at(d, Event::Operator { device, kind });
            }
            let customers = self.rng.range(1, 6);
            for _ in 0..customers {
                let d = self.rng.range(0, horizon as u64) as i64;
                self.at(d, Event::Customer { device });
            }
        }
        let mut t = MINUTE;
        while t < horizon + 5 * 60 * MINUTE {
            self.at(t, Event::Sweep);
            t += MINUTE;
        }
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            self.now = at;
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            match event {
                Event::Customer { device } => self.customer(device),
                Event::Deliver(cmd) => self.step(seed, cmd)?,
                Event::RefundAttempt { refund, attempt } => {
                    self.attempt_refund(seed, refund, attempt)?
                }
                Event::Operator { device, kind } => self.operator(seed, device, kind)?,
                Event::Sweep => {
                    let now = Timestamp::from_millis(self.now);
                    let due: Vec<_> = self
                        .world
                        .sessions
                        .values()
                        .filter(|s| s.due(now))
                        .map(|s| s.id.clone())
                        .collect();
                    for session in due {
                        self.step(seed, Command::Deadline { session })?;
                    }
                }
            }
        }
        if let Err(e) = self.auditor.facts.check_machines(&self.world) {
            return Err(self.fail(seed, &e));
        }
        for (k, v) in std::mem::take(&mut self.auditor.facts.stats) {
            *self.auditor.stats.entry(k).or_default() += v;
        }
        // A purchase the machine reported delivered in time was delivered, never refunded.
        for (session, request) in &self.auditor.delivered_in_time {
            let status = self
                .world
                .sessions
                .get(session)
                .and_then(|s| s.purchase(request))
                .map(|p| p.status);
            if status != Some(PurchaseStatus::Delivered) {
                return Err(self.fail(
                    seed,
                    &format!(
                        "{request} in {session} was reported delivered within its vend window but ended {status:?}"
                    ),
                ));
            }
        }
        // Every deadline has fired and every refund is final: nothing may be left open.
        for s in self.world.sessions.values() {
            if s.phase != Phase::Closed {
                return Err(self.fail(
                    seed,
                    &format!("session {} ends the run {:?}: {s:?}", s.id, s.phase),
                ));
            }
        }
        // Nothing is promised any more: every reservation ended with its purchase or order.
        let rows: Vec<SlotStock> = self
            .world
            .machines
            .iter()
            .flat_map(|m| m.slots.values().cloned())
            .collect();
        for row in rows {
            if row.reserved != 0 {
                return Err(self.fail(seed, &format!("{row:?} ends the run reserved")));
            }
            self.stat(if row.stock == 0 {
                "slot ends the run sold out"
            } else {
                "slot ends the run stocked"
            });
        }
        if !self.auditor.outstanding.is_empty() {
            return Err(self.fail(
                seed,
                &format!(
                    "reservations outstanding at the end: {:?}",
                    self.auditor.outstanding
                ),
            ));
        }
        // The ledger and Alipay agree: every refund Alipay paid is succeeded, and no other is.
        for s in self.world.sessions.values() {
            for r in &s.refunds {
                let truth = self.world.alipay.get(&r.id);
                if (truth == Some(&AlipayRefund::Paid)) != (r.status == RefundStatus::Succeeded) {
                    return Err(self.fail(
                        seed,
                        &format!(
                            "refund {} in {} ends {:?}, but Alipay {truth:?}",
                            r.id, s.id, r.status
                        ),
                    ));
                }
            }
        }
        // A stuck refund stays pending and retried until a verified verdict.
        let stuck: Vec<_> = self.auditor.stuck.iter().cloned().collect();
        for id in stuck {
            let Some(status) = self.world.refund(&id).map(|r| r.status) else {
                return Err(self.fail(seed, &format!("stuck refund {id} not stored")));
            };
            self.stat(&format!("stuck refund ended {status:?}"));
        }
        Ok(())
    }
}
