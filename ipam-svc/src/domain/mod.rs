//! IPAM domain logic, free of gRPC and SQL types: address arithmetic, pool definitions and their
//! validation, default address pools, and the allocator itself.

pub mod addr;
pub mod allocator;
pub mod pool;
pub mod space;

pub use addr::Family;
pub use allocator::{AllocError, Outcome, PoolState};
pub use pool::{AddrRange, PoolDef, PoolRequest, SubnetRequest};
pub use space::{AddressSpaces, DefaultPool};
