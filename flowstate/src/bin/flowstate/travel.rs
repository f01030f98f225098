//! The demo's workflow: travel reservations.
//!
//! - `reserve` (the frontend) reads the user's profile, takes a hotel room and
//!   a flight seat with conditional writes (capacity can never go below zero),
//!   releases the room again if the flight is sold out, sync-invokes `pay`,
//!   and async-invokes `confirm_order`.
//! - `pay` charges the card through a side-effect step (a simulated payment
//!   provider, deduplicating by the step's idempotency key, as real ones do)
//!   and records the charge in the ledger, keyed by the reservation.
//! - `confirm_order` writes the order record, keyed by the reservation.
//!
//! Every branch depends only on logged reads and logged outcomes, so a
//! re-execution takes the same path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flowstate::core::layout;
use flowstate::{Context, Error, Predicate, Result, RuntimeBuilder, StateStore, StepKey};
use serde::{Deserialize, Serialize};

/// User profiles, by user id.
pub const USERS: &str = "users";
/// Inventory counters.
pub const INVENTORY: &str = "inventory";
/// Charges, by reservation id.
pub const LEDGER: &str = "ledger";
/// Confirmed orders, by reservation id.
pub const ORDERS: &str = "orders";
/// Inventory key of the hotel's free rooms.
pub const ROOMS: &str = "hotel-rooms";
/// Inventory key of the flight's free seats.
pub const SEATS: &str = "flight-seats";

/// Price of a room, in cents.
const ROOM_CENTS: i64 = 12_000;
/// Price of a seat, in cents.
const SEAT_CENTS: i64 = 8_900;

/// Most compare-and-swap rounds on one counter before giving up.
const MAX_CAS_ROUNDS: usize = 1_000;

/// A loyalty tier (sets the price).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 20% off.
    Gold,
    /// List price.
    Standard,
}

/// A user profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Display name.
    pub name: String,
    /// Loyalty tier.
    pub tier: Tier,
}

/// What a request books.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trip {
    /// A room and a seat, or nothing.
    Package,
    /// A room only.
    HotelOnly,
    /// A seat only.
    FlightOnly,
}

impl Trip {
    /// Whether it needs a room.
    pub fn hotel(self) -> bool {
        matches!(self, Trip::Package | Trip::HotelOnly)
    }
    /// Whether it needs a seat.
    pub fn flight(self) -> bool {
        matches!(self, Trip::Package | Trip::FlightOnly)
    }
    /// Price in cents before the tier discount.
    fn list_price(self) -> i64 {
        i64::from(self.hotel()) * ROOM_CENTS + i64::from(self.flight()) * SEAT_CENTS
    }
}

/// Input of `reserve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// Who books.
    pub user: String,
    /// What.
    pub trip: Trip,
}

/// Output of `reserve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reservation {
    /// Booked, paid, order on its way.
    Confirmed {
        /// Amount charged, in cents.
        amount: i64,
        /// The payment provider's receipt.
        receipt: String,
        /// Instance id of the `confirm_order` call.
        order_instance: String,
    },
    /// Nothing taken, nothing charged.
    SoldOut {
        /// `hotel` or `flight`.
        what: String,
    },
    /// Unknown user.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Input of `pay`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The reservation's instance id (the ledger key).
    pub reservation: String,
    /// Who pays.
    pub user: String,
    /// Cents.
    pub amount: i64,
}

/// A ledger record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Who paid.
    pub user: String,
    /// Cents.
    pub amount: i64,
    /// The provider's receipt.
    pub receipt: String,
}

/// Input of `confirm_order`, and the order record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The reservation's instance id (the order key).
    pub reservation: String,
    /// Who booked.
    pub user: String,
    /// What.
    pub trip: Trip,
    /// Cents.
    pub amount: i64,
    /// The provider's receipt.
    pub receipt: String,
}

/// Input of `setup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// Profiles to create.
    pub users: Vec<(String, Profile)>,
    /// Free rooms.
    pub rooms: i64,
    /// Free seats.
    pub seats: i64,
}

/// One charge as the provider keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The reservation it pays for.
    pub reservation: String,
    /// Cents.
    pub amount: i64,
    /// Receipt returned.
    pub receipt: String,
}

/// A simulated payment provider: charges are deduplicated by the idempotency
/// key (the step key), as with real providers. It also watches for the one
/// thing the engine must never do: run the charge closure of a step whose
/// result is already recorded.
#[derive(Debug)]
pub struct PaymentProvider {
    /// The real store (no fault injection), to look the step's entry up.
    store: Arc<dyn StateStore>,
    charges: Mutex<HashMap<String, Charge>>,
    calls: AtomicU64,
    deduplicated: AtomicU64,
    late_calls: AtomicU64,
}

impl PaymentProvider {
    /// A provider checking recorded steps in `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            charges: Mutex::default(),
            calls: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            late_calls: AtomicU64::new(0),
        })
    }

    /// Charge once per idempotency key.
    async fn charge(&self, key: StepKey, payment: &Payment) -> std::result::Result<String, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let recorded = self.store.get(&layout::oplog_key(&key.instance, key.step)).await.map_err(|e| e.to_string())?;
        if recorded.is_some() {
            self.late_calls.fetch_add(1, Ordering::SeqCst);
        }
        let mut charges = self.charges.lock().map_err(|_| "provider lock poisoned".to_string())?;
        let next = charges.len() + 1;
        if let Some(existing) = charges.get(&key.to_string()) {
            self.deduplicated.fetch_add(1, Ordering::SeqCst);
            return Ok(existing.receipt.clone());
        }
        let charge = Charge {
            reservation: payment.reservation.clone(),
            amount: payment.amount,
            receipt: format!("rcpt-{next:05}"),
        };
        charges.insert(key.to_string(), charge.clone());
        Ok(charge.receipt)
    }

    /// Every charge made, one per idempotency key.
    pub fn charges(&self) -> Vec<Charge> {
        self.charges.lock().map(|c| c.values().cloned().collect()).unwrap_or_default()
    }

    /// Times the charge closure ran.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Repeated calls with a known idempotency key (a crash between the charge
    /// and its log entry; the provider answered with the first receipt).
    pub fn deduplicated(&self) -> u64 {
        self.deduplicated.load(Ordering::SeqCst)
    }

    /// Calls made although the step's result was already recorded (must be 0).
    pub fn late_calls(&self) -> u64 {
        self.late_calls.load(Ordering::SeqCst)
    }
}

/// Take one unit of an inventory counter if any is left: a compare-and-swap
/// loop whose every read and outcome is logged.
async fn take_one(ctx: &Context, key: &str) -> Result<bool> {
    for _ in 0..MAX_CAS_ROUNDS {
        let left: i64 = ctx.read(INVENTORY, key).await?.unwrap_or(0);
        if left <= 0 {
            return Ok(false);
        }
        let unchanged_and_available = Predicate::value().eq(left).and(Predicate::value().gt(0));
        if ctx.cond_write(INVENTORY, key, &(left - 1), unchanged_and_available).await? {
            return Ok(true);
        }
    }
    Err(Error::handler(format!("{key}: no compare-and-swap round won in {MAX_CAS_ROUNDS} tries")))
}

/// Give one unit back (the compensation of [`take_one`]).
async fn give_back(ctx: &Context, key: &str) -> Result<()> {
    for _ in 0..MAX_CAS_ROUNDS {
        let left: i64 = ctx.read(INVENTORY, key).await?.unwrap_or(0);
        if ctx.cond_write(INVENTORY, key, &(left + 1), Predicate::value().eq(left)).await? {
            return Ok(());
        }
    }
    Err(Error::handler(format!("{key}: no compare-and-swap round won in {MAX_CAS_ROUNDS} tries")))
}

/// The frontend.
pub async fn reserve(ctx: Context, req: ReserveRequest) -> Result<Reservation> {
    let Some(profile) = ctx.read::<Profile>(USERS, &req.user).await? else {
        return Ok(Reservation::Rejected { reason: format!("unknown user {}", req.user) });
    };
    if req.trip.hotel() && !take_one(&ctx, ROOMS).await? {
        return Ok(Reservation::SoldOut { what: "hotel".into() });
    }
    if req.trip.flight() && !take_one(&ctx, SEATS).await? {
        if req.trip.hotel() {
            give_back(&ctx, ROOMS).await?;
        }
        return Ok(Reservation::SoldOut { what: "flight".into() });
    }
    let list = req.trip.list_price();
    let amount = if profile.tier == Tier::Gold { list * 8 / 10 } else { list };
    let reservation = ctx.instance_id().as_str().to_string();
    let payment = Payment { reservation: reservation.clone(), user: req.user.clone(), amount };
    let receipt: String = ctx.invoke("pay", &payment).await?;
    let order = Order { reservation, user: req.user, trip: req.trip, amount, receipt: receipt.clone() };
    let order_instance = ctx.invoke_async("confirm_order", &order).await?;
    Ok(Reservation::Confirmed { amount, receipt, order_instance: order_instance.to_string() })
}

/// Charge the card once, and record the charge.
pub async fn pay(ctx: Context, payment: Payment, provider: Arc<PaymentProvider>) -> Result<String> {
    let p = payment.clone();
    let receipt: String = ctx.step("charge", |key| async move { provider.charge(key, &p).await }).await?;
    let entry = LedgerEntry { user: payment.user, amount: payment.amount, receipt: receipt.clone() };
    ctx.write(LEDGER, &payment.reservation, &entry).await?;
    Ok(receipt)
}

/// Record the order.
pub async fn confirm_order(ctx: Context, order: Order) -> Result<()> {
    let key = order.reservation.clone();
    ctx.write(ORDERS, &key, &order).await
}

/// Create the profiles and the inventory.
pub async fn setup(ctx: Context, setup: Setup) -> Result<()> {
    for (id, profile) in &setup.users {
        ctx.write(USERS, id, profile).await?;
    }
    ctx.write(INVENTORY, ROOMS, &setup.rooms).await?;
    ctx.write(INVENTORY, SEATS, &setup.seats).await
}

/// Register the demo's functions: `setup`, `reserve`, `pay`, `confirm_order`.
pub fn register(builder: RuntimeBuilder, provider: Arc<PaymentProvider>) -> RuntimeBuilder {
    builder
        .register("setup", setup)
        .register("reserve", reserve)
        .register("pay", move |ctx, p: Payment| pay(ctx, p, provider.clone()))
        .register("confirm_order", confirm_order)
}
