// The site's side of the federation: join, wait for a round, train through the coordinator's
// body over the Split stream, submit the front and back. Only a1, g2, the client parts'
// weights and a few scalars leave the site; images and masks never do.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/segmentation_set.h"
#include "split/unet.h"

namespace grpc {
class Channel;
}

namespace splitfed {

struct ClientTls {
  std::string certificate_pem;
  std::string private_key_pem;
  std::string ca_certificate_pem;
  std::string target_name_override;  // when the address is not in the coordinator's SANs
};

// What the coordinator asks the site to build; the site loads its data at this size.
struct DataRequest {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  int64_t num_classes = 0;
};
using DataLoader = std::function<absl::StatusOr<SegmentationSet>(const DataRequest&)>;

// `count` generated phantoms (datasets/phantom.h) from `seed`, at the run's size and classes.
DataLoader PhantomLoader(uint64_t seed, int64_t count);

// One local epoch as the site saw it: `seconds` runs from its first batch to its last.
struct EpochReport {
  int64_t round = 0;
  int64_t epoch = 0;  // 1-based
  double loss = 0;
  int64_t images = 0;
  double seconds = 0;
};

// How many of a site's `images` it holds back for validation (the last ones): `fraction` of
// them, and at least one once it has 4.
int64_t ValidationImages(int64_t images, double fraction);

struct SiteClientOptions {
  std::string coordinator;               // "host:port"
  std::optional<ClientTls> tls;          // nullopt: insecure (loopback experiments only)
  std::string insecure_site_name;        // sent as x-splitfed-site in insecure mode
  std::shared_ptr<grpc::Channel> channel;  // if set, used instead of dialling `coordinator`
  DataLoader load_data;
  double validation_fraction = 0.2;      // the last images of the set, never trained on
  double initial_backoff_seconds = 0.5;  // reconnect waits double up to the maximum
  double max_backoff_seconds = 30;
  int64_t max_reconnects = -1;           // -1: keep trying until stopped
  // Once joined, the site says it is alive this often (so `splitfed status` shows "last
  // seen" moving during long rounds and waits); 0 turns heartbeats off.
  double heartbeat_seconds = 15;
  // Called after each local epoch (e.g. the simulator's progress bar); any thread.
  std::function<void(const EpochReport&)> on_epoch;
  // SplitFed-CL: called each round after the warm-up (before it no mask is judged) with every training image's r_i and whether the site
  // trusted its mask (images in the order of the loaded set). Stays at the site; the
  // simulator scores detection with it.
  std::function<void(int64_t round, const std::vector<double>& reliability,
                     const std::vector<bool>& reliable)>
      on_reliability;
};

struct SiteRunSummary {
  int64_t rounds_completed = 0;
  double last_train_loss = 0;
  double last_validation_dice = 0;
};

class SiteClient {
 public:
  explicit SiteClient(SiteClientOptions options);
  ~SiteClient();

  // Takes part in rounds until the coordinator says the run is over, `Stop()` is called, or
  // reconnecting gives up. Logs key=value lines.
  absl::StatusOr<SiteRunSummary> Run();
  // Safe from any thread (e.g. a signal handler's thread): ends Run() promptly.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace splitfed
