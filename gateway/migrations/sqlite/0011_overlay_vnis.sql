-- The VXLAN network identifier of each overlay network: unique across the cluster (the key),
-- one per network. Allocated by the gateway from --vni-range unless the network asks for one
-- (com.docker.network.driver.overlay.vxlanid_list); it goes with its network.
CREATE TABLE gateway_vnis (
    vni        BIGINT PRIMARY KEY,
    network_id TEXT NOT NULL UNIQUE REFERENCES gateway_networks (id)
);
