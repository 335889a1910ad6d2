//! Generated Rust types for callflow's protobuf packages.
//!
//! The `.proto` files beside this crate are the contract; this crate only
//! compiles them. Other languages generate their own clients from the same
//! files.

/// `callflow.events.v1`: the event envelope and payloads.
pub mod events {
    pub mod v1 {
        tonic::include_proto!("callflow.events.v1");
    }
}

/// `callflow.eventstore.v1`: the event store's gRPC API.
pub mod eventstore {
    pub mod v1 {
        tonic::include_proto!("callflow.eventstore.v1");
    }
}

/// `callflow.reminders.v1`: the reminder scheduler's gRPC API.
pub mod reminders {
    pub mod v1 {
        tonic::include_proto!("callflow.reminders.v1");
    }
}

/// `callflow.timers.v1`: durable timers, kept by the reminder scheduler.
pub mod timers {
    pub mod v1 {
        tonic::include_proto!("callflow.timers.v1");
    }
}

/// `callflow.leads.v1`: the partner dashboard of web leads (lead-dialer).
pub mod leads {
    pub mod v1 {
        tonic::include_proto!("callflow.leads.v1");
    }
}

/// `callflow.routing.v1`: the call-router's directory, masking sessions
/// and statistics.
pub mod routing {
    pub mod v1 {
        tonic::include_proto!("callflow.routing.v1");
    }
}

/// Every message of the packages above, for decoding by name (JSON
/// export) and for reading field options (personal data).
pub fn descriptors() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(
            include_bytes!(concat!(env!("OUT_DIR"), "/callflow_descriptors.bin")).as_slice(),
        )
        .expect("descriptors compiled by build.rs")
    })
}

pub use prost;
pub use prost_reflect;
pub use prost_types;
