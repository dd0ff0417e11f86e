//! The service's one error type, and its one mapping to gRPC statuses.

use std::net::IpAddr;

use tonic::Status;
use weft_runtime::FieldViolation;

use crate::{domain::Family, store::IpamStoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    #[error("pool {0:?} not found")]
    PoolNotFound(String),
    #[error("address {addr} is not allocated in pool {pool:?}")]
    NotAllocated { pool: String, addr: IpAddr },
    #[error("address {addr} in pool {pool:?} is already held by {holder}")]
    AddressTaken {
        pool: String,
        addr: IpAddr,
        holder: String,
    },
    #[error("owner {owner:?} already holds {addr} in pool {pool:?}")]
    OwnerHoldsOther {
        pool: String,
        owner: String,
        addr: IpAddr,
    },
    #[error("no free address in pool {pool:?} ({subnet})")]
    Exhausted { pool: String, subnet: String },
    #[error("no free {} subnet{} left in the default pools of address space {space:?}", .family.name(), .prefix_len.map(|p| format!(" of size /{p}")).unwrap_or_default())]
    NoFreeSubnet {
        space: String,
        family: Family,
        prefix_len: Option<u8>,
    },
    #[error("subnet {subnet} overlaps pool {other:?} ({other_subnet}) in address space {space:?}")]
    Overlap {
        subnet: String,
        other: String,
        other_subnet: String,
        space: String,
    },
    #[error("pool {id:?} already exists with another definition (subnet {subnet})")]
    PoolExists { id: String, subnet: String },
    #[error("pool {pool:?} still has {count} allocations: release them first, or force")]
    PoolInUse { pool: String, count: u64 },
    #[error("store error: {0}")]
    Store(#[from] IpamStoreError),
    #[error("the allocation writer has stopped")]
    WriterGone,
}

impl From<sqlx::Error> for IpamError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(IpamStoreError::Sql(e))
    }
}

impl IpamError {
    pub fn invalid(field: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, value, reason)])
    }
}

impl From<IpamError> for Status {
    fn from(e: IpamError) -> Self {
        let msg = e.to_string();
        match e {
            IpamError::Invalid(v) => weft_runtime::invalid_argument(&v),
            IpamError::PoolNotFound(_) | IpamError::NotAllocated { .. } => Status::not_found(msg),
            IpamError::AddressTaken { .. }
            | IpamError::OwnerHoldsOther { .. }
            | IpamError::Overlap { .. }
            | IpamError::PoolExists { .. } => Status::already_exists(msg),
            IpamError::Exhausted { .. } | IpamError::NoFreeSubnet { .. } => {
                Status::resource_exhausted(msg)
            }
            IpamError::PoolInUse { .. } => Status::failed_precondition(msg),
            IpamError::WriterGone => Status::unavailable(msg),
            IpamError::Store(IpamStoreError::Sql(ref s)) if weft_store::is_unavailable(s) => {
                tracing::warn!(error = %s, "store unavailable");
                Status::unavailable("store unavailable")
            }
            IpamError::Store(IpamStoreError::Sqlite(ref s))
                if crate::store::sqlite_is_unavailable(s) =>
            {
                tracing::warn!(error = %s, "store unavailable");
                Status::unavailable("store unavailable")
            }
            IpamError::Store(ref s) => weft_runtime::internal(s),
        }
    }
}
