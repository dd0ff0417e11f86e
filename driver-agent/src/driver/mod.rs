//! Network drivers: what each one programs in the kernel.

pub mod bridge;
pub mod ipvlan;
