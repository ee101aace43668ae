//! Heat as a schedulable resource (issue 15): the thermal model of a tile ([`model`]) and,
//! built on it, what a tile offers its cell ([`msg::Descriptor`]) and the leases it runs
//! ([`machine`]).
//!
//! # The model and its sources
//!
//! Every tile of a shell (a layer of the topology, at radius `r` from the star) runs work
//! that dissipates all the electrical power it draws as heat, and gets rid of it through a
//! radiator. The equations, all in SI units (W, J, K, m²):
//!
//! - **Power from work.** `P = P_idle + p_unit · u · s`, with `u` the compute units in use,
//!   `p_unit` the watts one unit dissipates and `s ∈ [0, 1]` the throttle factor (1 = not
//!   throttled). Every watt drawn ends as heat (first law; a computer does no external work).
//! - **The sink a shell's radiator sees.** `T_sink(r) = T★ · √(R★ / (2 r))`: the radiative
//!   equilibrium temperature of a black isothermal sphere at distance `r` from a star of
//!   effective temperature `T★` and radius `R★`, zero albedo (the planetary equilibrium
//!   temperature; e.g. de Pater & Lissauer, *Planetary Sciences*, ch. 3). For the Sun
//!   (IAU 2015 Resolution B3: `T★` = 5772 K, `R★` = 695 700 km = 0.00465047 AU) it is
//!   278.3 K at 1 AU (tested). A shell
//!   closer to the star sees a hotter sink, so the same radiator rejects less there: this
//!   is how the shell's radius enters.
//! - **Heat the radiator emits.** Stefan–Boltzmann, net exchange of a grey body with its
//!   sink: `E(T) = ε σ A (T⁴ − T_sink⁴)`, `σ` = 5.670 374 419 × 10⁻⁸ W m⁻² K⁻⁴ (CODATA
//!   2018), `ε` the emissivity, `A` the radiator area, `T` the tile's temperature.
//! - **Heat passed outward.** A Matroska shell radiates into the one outside it: a
//!   fraction `f` of `E` (the view factor of the enclosing shell, a per-layer parameter)
//!   lands on the next shell out, which must reject it in turn; the rest, `(1 − f) E`, is
//!   **rejected** to deep space. The outermost shell has nothing around it: `f = 0`. The
//!   heat a tile receives from the shell inside it, `Q_in`, is an input of the model.
//! - **Heat stored.** The tile's thermal mass `C` (J/K): `C dT/dt = P + Q_in − E(T)`.
//!   Integrated by explicit Euler steps no longer than a tenth of the radiator's time
//!   constant `C / (4 ε σ A T_max³)` (stable, since `dE/dT = 4 ε σ A T³`). Each step books
//!   produced `P h`, received `Q_in h`, rejected `(1−f) E h`, passed outward `f E h` and
//!   stored `C ΔT`, with `ΔT = (P + Q_in − E) h / C`, so **produced + received = rejected +
//!   passed outward + stored** holds to rounding (tested).
//! - **Capacity and thermal load.** The most a radiator can emit in steady state is at its
//!   material limit `T_max`: `Q_cap = ε σ A (T_max⁴ − T_sink⁴)`. The **thermal load** is the
//!   heat to reject over the capacity: `ρ = (P + Q_in) / Q_cap`. Above 1 the tile heats
//!   without bound; the spec's backpressure threshold is ρ = 0.9 ("~90 % thermal load").
//!
//! What the model leaves out, on purpose: conduction between tiles of one shell, the
//! absorbed starlight (folded into `T_sink`), the enclosing shell's own temperature (it
//! is cooler than `T_sink(r)` of the inner shell, so `T_sink` is the conservative bound).

pub mod config;
pub mod grants;
pub mod machine;
pub mod model;
pub mod msg;
pub mod outbox;
pub mod task;
