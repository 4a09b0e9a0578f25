// The cluster's part of the signaling server's status and metrics
// (docs/cluster.md, docs/admin.md).
#pragma once

#include <string>

#include "actors/cluster/cluster.hpp"
#include "proto/admin.pb.h"

namespace p2proxy {

/// Fills `out` from the CLUSTER's figures.
void fill_cluster_status(const cluster_metrics& m, admin::ClusterStatus& out);

/// Prometheus text for the cluster's figures (appended to the server's).
std::string cluster_prometheus(const cluster_metrics& m);

} // namespace p2proxy
