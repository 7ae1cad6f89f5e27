#include "server/services.h"

#include <google/protobuf/arena.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/client_identity.h"
#include "common/completion_queue.h"
#include "common/grpc_status.h"
#include "common/mutex.h"
#include "common/thread_name.h"
#include "server/load_reply.h"

namespace ramster {
namespace services_internal {

// The index of PageStore's method `name` among the service's methods, as
// the generated service numbers them (in .proto order, as the descriptor
// does).
inline int PageStoreMethodIndex(const char* name) {
  return v1::PagesRequest::descriptor()
      ->file()
      ->FindServiceByName("PageStore")
      ->FindMethodByName(name)
      ->index();
}

inline int LoadMethodIndex() {
  static const int index = PageStoreMethodIndex("Load");
  return index;
}

inline int PagesMethodIndex() {
  static const int index = PageStoreMethodIndex("Pages");
  return index;
}

// PageStore.Load with its request parsed by gRPC as usual and its reply sent
// as the bytes the node encoded (LoadReplyEncoder, see load_reply.h): the
// generated WithAsyncMethod_Load, with a ByteBuffer writer.
template <class BaseClass>
class WithEncodedLoadReply : public BaseClass {
 public:
  WithEncodedLoadReply() { grpc::Service::MarkMethodAsync(LoadMethodIndex()); }
  // The synchronous version is never called once the method is async.
  grpc::Status Load(grpc::ServerContext*, const v1::LoadRequest*, v1::LoadResponse*) override {
    std::abort();
  }
  void RequestLoad(grpc::ServerContext* context, v1::LoadRequest* request,
                   grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* response,
                   grpc::CompletionQueue* new_call_cq,
                   grpc::ServerCompletionQueue* notification_cq, void* tag) {
    grpc::Service::RequestAsyncUnary(LoadMethodIndex(), context, request, response, new_call_cq,
                                     notification_cq, tag);
  }
};

// PageStore.Pages with its replies sent as bytes (a Load's as the node
// encoded them): the generated WithAsyncMethod_Pages, with a ByteBuffer
// writer.
template <class BaseClass>
class WithEncodedPagesReplies : public BaseClass {
 public:
  WithEncodedPagesReplies() { grpc::Service::MarkMethodAsync(PagesMethodIndex()); }
  grpc::Status Pages(grpc::ServerContext*,
                     grpc::ServerReaderWriter<v1::PagesReply, v1::PagesRequest>*) override {
    std::abort();
  }
  void RequestPages(grpc::ServerContext* context,
                    grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, v1::PagesRequest>* stream,
                    grpc::CompletionQueue* new_call_cq,
                    grpc::ServerCompletionQueue* notification_cq, void* tag) {
    grpc::Service::RequestAsyncBidiStreaming(PagesMethodIndex(), context, stream, new_call_cq,
                                             notification_cq, tag);
  }
};

using PageStoreService = v1::PageStore::WithAsyncMethod_OpenSession<
    v1::PageStore::WithAsyncMethod_Heartbeat<v1::PageStore::WithAsyncMethod_Store<
        WithEncodedLoadReply<v1::PageStore::WithAsyncMethod_Invalidate<
            WithEncodedPagesReplies<v1::PageStore::Service>>>>>>;

// Outlives every call. The services are what calls wait on; the rest is
// constant after construction.
struct Shared {
  Shared(Node* node, WorkQueue* work, std::string admin_token)
      : node(node), work(work), admin_token(std::move(admin_token)) {}

  Node* const node;
  WorkQueue* const work;
  const std::string admin_token;

  // Starting an operation on a completion queue that has been shut down is
  // fatal, so every call brackets the operations it starts with Enter and
  // Leave, and Stop (before the queues shut down) waits for the calls
  // between the two; calls that arrive after Stop are dropped (freeing an
  // unfinished call cancels it).
  //
  // True: the caller may start operations until its Leave.
  bool Enter() {
    MutexLock lock(&mu);
    if (stopping) return false;
    ++active;
    return true;
  }
  void Leave() {
    MutexLock lock(&mu);
    if (--active == 0 && stopping) idle.SignalAll();
  }
  void Stop() {
    MutexLock lock(&mu);
    stopping = true;
    while (active > 0) idle.Wait();
  }

  // The open page streams (PageStore.Pages), so that CloseStreams can end
  // them: a client keeps its streams open for as long as it runs.
  // False: streams are closed; the caller ends its stream.
  bool AddStream(grpc::ServerContext* ctx) {
    MutexLock lock(&mu);
    if (streams_closed) return false;
    streams.insert(ctx);
    return true;
  }
  void RemoveStream(grpc::ServerContext* ctx) {
    MutexLock lock(&mu);
    streams.erase(ctx);
  }
  void CloseStreams() {
    MutexLock lock(&mu);
    streams_closed = true;
    for (grpc::ServerContext* ctx : streams) ctx->TryCancel();
  }

  Mutex mu;
  CondVar idle{&mu};
  bool stopping ABSL_GUARDED_BY(mu) = false;
  int active ABSL_GUARDED_BY(mu) = 0;
  bool streams_closed ABSL_GUARDED_BY(mu) = false;
  absl::flat_hash_set<grpc::ServerContext*> streams ABSL_GUARDED_BY(mu);

  PageStoreService page_store;
  v1::Admin::AsyncService admin;
  // Health checks, and UNIMPLEMENTED for any other method no service has.
  grpc::AsyncGenericService generic;
};

}  // namespace services_internal

namespace {

using services_internal::PageStoreService;
using services_internal::Shared;

constexpr char kAuthorizationKey[] = "authorization";
constexpr char kHealthCheckMethod[] = "/grpc.health.v1.Health/Check";
// grpc.health.v1.HealthCheckResponse.ServingStatus.
constexpr int kServing = 1;

// What the io threads take off a completion queue: every tag is a Call.
class Call {
 public:
  virtual ~Call() = default;
  // The operation tagged with this call completed (`ok`: successfully).
  // Runs on the io thread of the call's queue.
  virtual void Proceed(bool ok) = 0;
};

// One unary method: how to wait for its calls, who may call it, what the
// node does with it, and whether RAM alone can answer it.
template <typename Service, typename Request, typename Response>
struct Method {
  using AwaitFn = void (Service::*)(grpc::ServerContext*, Request*,
                                    grpc::ServerAsyncResponseWriter<Response>*,
                                    grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // The caller's identity (what `handle` is given), or why the call is
  // refused.
  using AdmitFn = absl::StatusOr<std::string> (*)(const Shared&, const grpc::ServerContext&,
                                                  const Request&);
  using HandleFn = absl::Status (*)(const Shared&, const std::string& caller, const Request&,
                                    Response*);
  Service Shared::*service;
  AwaitFn await;
  AdmitFn admit;
  HandleFn handle;
  // Touches only memory and short locks while Node::ServesFromRam().
  bool ram_only;
  // A refusal for overload counts in the node's rejected figure.
  bool count_overload;
};

// One unary call, from the moment the service waits for it until its status
// is sent: the first completion brings the call, the second says its status
// went out (or that the call died). Deletes itself on the second, or on a
// failed first one (the server is shutting down).
//
// Between the two completions exactly one thread owns the call: the io
// thread that took it, or the worker it was handed to.
template <typename Service, typename Request, typename Response>
class UnaryCall final : public Call {
 public:
  using MethodT = Method<Service, Request, Response>;

  // Waits for the next call of `method` on `cq`.
  static void Await(Shared* shared, const MethodT* method, grpc::ServerCompletionQueue* cq) {
    auto* call = new UnaryCall(shared, method, cq);
    Service& service = shared->*method->service;
    (service.*method->await)(&call->ctx_, call->request_, &call->responder_, cq, cq, call);
  }

  void Proceed(bool ok) override {
    if (!ok || finishing_ || !shared_->Enter()) {
      delete this;
      return;
    }
    finishing_ = true;
    Await(shared_, method_, cq_);  // the next call of this method
    Serve();
  }

 private:
  // Room on the call for the messages of a one-page request and its reply;
  // a batch grows the arena from the heap.
  static constexpr size_t kArenaBlockBytes = 1024;

  UnaryCall(Shared* shared, const MethodT* method, grpc::ServerCompletionQueue* cq)
      : shared_(shared),
        method_(method),
        cq_(cq),
        arena_(arena_block_, sizeof(arena_block_)),
        request_(google::protobuf::Arena::Create<Request>(&arena_)),
        response_(google::protobuf::Arena::Create<Response>(&arena_)),
        responder_(&ctx_) {}

  // REQUIRES: Enter; Leaves once the call is finished.
  void Serve() {
    absl::StatusOr<std::string> caller = method_->admit(*shared_, ctx_, *request_);
    if (!caller.ok()) {
      FinishAndLeave(caller.status());
      return;
    }
    if (method_->ram_only && shared_->node->ServesFromRam()) {
      // Memory and short locks only: answered here, no other thread woken.
      FinishAndLeave(Handle(*caller));
      return;
    }
    caller_ = std::move(*caller);
    // Once queued, the worker owns the call: `this` is not touched here
    // again.
    if (!shared_->work->Submit([this] { FinishAndLeave(Handle(caller_)); })) {
      if (method_->count_overload) shared_->node->CountRejected();
      FinishAndLeave(absl::UnavailableError("node overloaded"));
    }
  }

  absl::Status Handle(const std::string& caller) {
    return method_->handle(*shared_, caller, *request_, response_);
  }

  // Any thread; the completion comes back to cq_, whose thread may free the
  // call at once.
  void FinishAndLeave(const absl::Status& status) {
    Shared* shared = shared_;
    if (status.ok()) {
      responder_.Finish(*response_, grpc::Status::OK, this);
    } else {
      responder_.FinishWithError(ToGrpcStatus(status), this);
    }
    shared->Leave();
  }

  Shared* const shared_;
  const MethodT* const method_;
  grpc::ServerCompletionQueue* const cq_;
  bool finishing_ = false;
  std::string caller_;
  // The arena's first block, declared before the arena: it must outlive it.
  alignas(16) char arena_block_[kArenaBlockBytes];
  google::protobuf::Arena arena_;
  Request* const request_;    // on arena_
  Response* const response_;  // on arena_
  grpc::ServerContext ctx_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
};

// One PageStore.Pages stream, from the moment the service waits for it until
// its status is sent. Requests are taken one at a time: read one, answer it
// (here when RAM alone can, else on a worker, as UnaryCall does), write the
// reply, read the next. One operation is in flight at any time, so between
// two completions exactly one thread owns the call. Deletes itself on the
// completion of its Finish, or on a failed first one.
class PagesCall final : public Call {
 public:
  static void Await(Shared* shared, grpc::ServerCompletionQueue* cq) {
    auto* call = new PagesCall(shared, cq);
    shared->page_store.RequestPages(&call->ctx_, &call->stream_, cq, cq, call);
  }

  ~PagesCall() override {
    if (registered_) shared_->RemoveStream(&ctx_);
  }

  void Proceed(bool ok) override {
    if (state_ == State::kFinishing || (state_ == State::kWaiting && !ok) ||
        !shared_->Enter()) {
      delete this;
      return;
    }
    switch (state_) {
      case State::kWaiting:
        Await(shared_, cq_);  // the next stream
        Open();
        break;
      case State::kReading:
        if (!ok) {
          // The client closed its side, or the stream was cancelled.
          FinishAndLeave(absl::OkStatus());
        } else {
          Serve();
        }
        break;
      case State::kWriting:
        if (!ok) {
          FinishAndLeave(absl::CancelledError("reply not sent"));
        } else {
          ReadAndLeave();
        }
        break;
      case State::kFinishing:  // deleted above
        shared_->Leave();
        break;
    }
  }

 private:
  enum class State { kWaiting, kReading, kWriting, kFinishing };

  // As UnaryCall's: room for a one-page request and its reply.
  static constexpr size_t kArenaBlockBytes = 1024;

  PagesCall(Shared* shared, grpc::ServerCompletionQueue* cq)
      : shared_(shared), cq_(cq), arena_(arena_block_, sizeof(arena_block_)), stream_(&ctx_) {}

  // REQUIRES: Enter (as for every method below: each Leaves once it has
  // started the call's next operation).
  void Open() {
    if (!shared_->AddStream(&ctx_)) {
      FinishAndLeave(absl::UnavailableError("node shutting down"));
      return;
    }
    registered_ = true;
    absl::StatusOr<std::string> caller = CallerIdentity(ctx_);
    if (!caller.ok()) {
      shared_->node->CountRejected();
      FinishAndLeave(caller.status());
      return;
    }
    caller_ = std::move(*caller);
    ReadAndLeave();
  }

  // Each request and its store reply live on the arena, reset for the
  // next: an idle stream holds its first block, not the memory of the
  // largest request it ever had.
  void ReadAndLeave() {
    state_ = State::kReading;
    arena_.Reset();
    request_ = google::protobuf::Arena::CreateMessage<v1::PagesRequest>(&arena_);
    stream_.Read(request_, this);
    shared_->Leave();
  }

  void Serve() {
    if (request_->op_case() == v1::PagesRequest::OP_NOT_SET) {
      shared_->node->CountRejected();
      WriteAndLeave(absl::InvalidArgumentError("request has neither store nor load"));
      return;
    }
    if (shared_->node->ServesFromRam()) {
      // Memory and short locks only: answered here, no other thread woken.
      WriteAndLeave(Answer());
      return;
    }
    // Once queued, the worker owns the call.
    if (!shared_->work->Submit([this] { WriteAndLeave(Answer()); })) {
      shared_->node->CountRejected();
      WriteAndLeave(absl::UnavailableError("node overloaded"));
    }
  }

  // The request's answer in reply_ (ok), or why it failed as a whole.
  absl::Status Answer() {
    if (request_->op_case() == v1::PagesRequest::kStore) {
      auto* store_reply = google::protobuf::Arena::CreateMessage<v1::PagesReply>(&arena_);
      absl::Status s =
          shared_->node->Store(caller_, request_->store(), store_reply->mutable_store());
      if (!s.ok()) return s;
      bool own = false;
      reply_.Clear();  // serializing needs an empty buffer
      return FromGrpcStatus(grpc::SerializationTraits<v1::PagesReply>::Serialize(
          *store_reply, &reply_, &own));
    }
    LoadReplyEncoder encoder(request_->load().keys_size());
    if (absl::Status s = shared_->node->Load(caller_, request_->load(), &encoder); !s.ok()) {
      return s;
    }
    // PagesReply{load = <the encoded LoadResponse>}.
    LoadReplyEncoder::Encoded encoded = encoder.Release();
    uint8_t header[kMaxPagesReplyLoadHeader];
    grpc::Slice slices[2] = {grpc::Slice(header, PagesReplyLoadHeader(encoded.size, header)),
                             grpc::Slice()};
    size_t count = 1;
    if (encoded.size > 0) {
      slices[count++] =
          grpc::Slice(encoded.data.release(), encoded.size, [](void* p) { std::free(p); });
    }
    reply_ = grpc::ByteBuffer(slices, count);
    return absl::OkStatus();
  }

  // Any thread: sends the reply (ok) or the request's failure.
  void WriteAndLeave(const absl::Status& status) {
    Shared* shared = shared_;
    if (!status.ok()) {
      v1::PagesReply failed;
      failed.set_code(static_cast<int32_t>(status.code()));
      failed.set_message(std::string(status.message()));
      bool own = false;
      reply_.Clear();
      grpc::SerializationTraits<v1::PagesReply>::Serialize(failed, &reply_, &own);
    }
    state_ = State::kWriting;
    stream_.Write(reply_, this);
    shared->Leave();
  }

  void FinishAndLeave(const absl::Status& status) {
    state_ = State::kFinishing;
    stream_.Finish(ToGrpcStatus(status), this);
    shared_->Leave();
  }

  Shared* const shared_;
  grpc::ServerCompletionQueue* const cq_;
  State state_ = State::kWaiting;
  bool registered_ = false;
  std::string caller_;
  // The arena's first block, declared before the arena: it must outlive it.
  alignas(16) char arena_block_[kArenaBlockBytes];
  google::protobuf::Arena arena_;
  v1::PagesRequest* request_ = nullptr;  // on arena_, the one being answered
  grpc::ByteBuffer reply_;
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, v1::PagesRequest> stream_;
};

// A call of a method no registered service has: grpc.health.v1.Health/Check
// is answered (SERVING for the whole server, service ""; NOT_FOUND for any
// other name, as gRPC's default health service does), anything else is
// UNIMPLEMENTED. Stands in for the default health service, which would use
// the callback API (see services.h). Health/Watch is not offered.
class GenericCall final : public Call {
 public:
  static void Await(Shared* shared, grpc::ServerCompletionQueue* cq) {
    auto* call = new GenericCall(shared, cq);
    shared->generic.RequestCall(&call->ctx_, &call->stream_, cq, cq, call);
  }

  void Proceed(bool ok) override {
    switch (state_) {
      case State::kWaiting:
        // Enter here, Leave once the last operation has started.
        if (!ok || !shared_->Enter()) break;
        Await(shared_, cq_);
        if (ctx_.method() != kHealthCheckMethod) {
          state_ = State::kFinishing;
          stream_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, ""), this);
          shared_->Leave();
          return;
        }
        state_ = State::kReading;
        stream_.Read(&request_, this);
        return;
      case State::kReading:
        state_ = State::kFinishing;
        Answer(ok);
        shared_->Leave();
        return;
      case State::kFinishing:
        break;
    }
    delete this;
  }

 private:
  enum class State { kWaiting, kReading, kFinishing };

  GenericCall(Shared* shared, grpc::ServerCompletionQueue* cq)
      : shared_(shared), cq_(cq), stream_(&ctx_) {}

  // `ok`: a request message arrived in request_.
  void Answer(bool ok) {
    std::string service;
    if (!ok || !ParseService(&service)) {
      stream_.Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad health check request"),
                     this);
      return;
    }
    if (!service.empty()) {
      stream_.Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "service name unknown"), this);
      return;
    }
    // HealthCheckResponse{status = SERVING}: field 1, varint.
    const char reply[] = {static_cast<char>(
                              google::protobuf::internal::WireFormatLite::MakeTag(
                                  1, google::protobuf::internal::WireFormatLite::WIRETYPE_VARINT)),
                          static_cast<char>(kServing)};
    grpc::Slice slice(reply, sizeof(reply));
    grpc::ByteBuffer buffer(&slice, 1);
    stream_.WriteAndFinish(buffer, grpc::WriteOptions(), grpc::Status::OK, this);
  }

  // HealthCheckRequest{string service = 1} from request_.
  bool ParseService(std::string* service) {
    std::vector<grpc::Slice> slices;
    if (!request_.Dump(&slices).ok()) return false;
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                              static_cast<int>(bytes.size()));
    while (uint32_t tag = in.ReadTag()) {
      if (tag == google::protobuf::internal::WireFormatLite::MakeTag(
                     1, google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
        if (!google::protobuf::internal::WireFormatLite::ReadString(&in, service)) return false;
      } else if (!google::protobuf::internal::WireFormatLite::SkipField(&in, tag)) {
        return false;
      }
    }
    return in.ConsumedEntireMessage();
  }

  Shared* const shared_;
  grpc::ServerCompletionQueue* const cq_;
  State state_ = State::kWaiting;
  grpc::GenericServerContext ctx_;
  grpc::GenericServerAsyncReaderWriter stream_;
  grpc::ByteBuffer request_;
};

// PageStore: the caller is the client named in the metadata.
template <typename Request>
absl::StatusOr<std::string> AdmitClient(const Shared& shared, const grpc::ServerContext& ctx,
                                        const Request&) {
  absl::StatusOr<std::string> who = CallerIdentity(ctx);
  if (!who.ok()) shared.node->CountRejected();
  return who;
}

template <typename Request, typename Response,
          absl::Status (Node::*fn)(const std::string&, const Request&, Response*)>
absl::Status CallNode(const Shared& shared, const std::string& client, const Request& request,
                      Response* response) {
  return (shared.node->*fn)(client, request, response);
}

template <typename Request, typename Response,
          absl::Status (Node::*fn)(const std::string&, const Request&, Response*)>
Method<PageStoreService, Request, Response> PageStoreMethod(
    typename Method<PageStoreService, Request, Response>::AwaitFn await,
    bool ram_only) {
  return {&Shared::page_store, await, &AdmitClient<Request>,
          &CallNode<Request, Response, fn>, ram_only, /*count_overload=*/true};
}

// Load's reply: the node's results encoded straight into the buffer gRPC
// sends (see load_reply.h).
absl::Status EncodedLoad(const Shared& shared, const std::string& client,
                         const v1::LoadRequest& request, grpc::ByteBuffer* reply) {
  LoadReplyEncoder encoder(request.keys_size());
  if (absl::Status s = shared.node->Load(client, request, &encoder); !s.ok()) return s;
  LoadReplyEncoder::Encoded encoded = encoder.Release();
  grpc::Slice slice;  // an empty reply (no keys) is an empty message
  if (encoded.size > 0) {
    slice = grpc::Slice(encoded.data.release(), encoded.size, [](void* p) { std::free(p); });
  }
  *reply = grpc::ByteBuffer(&slice, 1);
  return absl::OkStatus();
}

const auto kOpenSession =
    PageStoreMethod<v1::OpenSessionRequest, v1::OpenSessionResponse, &Node::OpenSession>(
        &PageStoreService::RequestOpenSession, /*ram_only=*/false);
const auto kHeartbeat =
    PageStoreMethod<v1::HeartbeatRequest, v1::HeartbeatResponse, &Node::Heartbeat>(
        &PageStoreService::RequestHeartbeat, /*ram_only=*/true);
const auto kStore = PageStoreMethod<v1::StoreRequest, v1::StoreResponse, &Node::Store>(
    &PageStoreService::RequestStore, /*ram_only=*/true);
const Method<PageStoreService, v1::LoadRequest, grpc::ByteBuffer> kLoad = {
    &Shared::page_store,          &PageStoreService::RequestLoad,
    &AdmitClient<v1::LoadRequest>, &EncodedLoad,
    /*ram_only=*/true,            /*count_overload=*/true};
const auto kInvalidate =
    PageStoreMethod<v1::InvalidateRequest, v1::InvalidateResponse, &Node::Invalidate>(
        &PageStoreService::RequestInvalidate, /*ram_only=*/false);

// Admin: the caller must present the admin token when the node has one.
template <typename Request>
absl::StatusOr<std::string> AdmitAdmin(const Shared& shared, const grpc::ServerContext& ctx,
                                       const Request&) {
  if (shared.admin_token.empty()) return std::string();
  const auto& md = ctx.client_metadata();
  auto it = md.find(kAuthorizationKey);
  if (it == md.end() || absl::string_view(it->second.data(), it->second.size()) !=
                            absl::StrCat("Bearer ", shared.admin_token)) {
    shared.node->CountRejected();
    return absl::UnauthenticatedError("admin token required");
  }
  return std::string();
}

absl::StatusOr<std::string> AdmitQuota(const Shared& shared, const grpc::ServerContext& ctx,
                                       const v1::SetClientQuotaRequest& request) {
  if (!IsValidClientId(request.client_id())) {
    return absl::InvalidArgumentError("malformed client id");
  }
  return AdmitAdmin(shared, ctx, request);
}

template <typename Request, typename Response>
Method<v1::Admin::AsyncService, Request, Response> AdminMethod(
    typename Method<v1::Admin::AsyncService, Request, Response>::AwaitFn await,
    typename Method<v1::Admin::AsyncService, Request, Response>::HandleFn handle,
    typename Method<v1::Admin::AsyncService, Request, Response>::AdmitFn admit =
        &AdmitAdmin<Request>) {
  return {&Shared::admin, await, admit, handle, /*ram_only=*/false, /*count_overload=*/false};
}

const auto kGetStatus = AdminMethod<v1::GetStatusRequest, v1::NodeStatus>(
    &v1::Admin::AsyncService::RequestGetStatus,
    [](const Shared& s, const std::string&, const v1::GetStatusRequest&,
       v1::NodeStatus* response) {
      s.node->GetStatus(response);
      return absl::OkStatus();
    });
const auto kListClients = AdminMethod<v1::ListClientsRequest, v1::ListClientsResponse>(
    &v1::Admin::AsyncService::RequestListClients,
    [](const Shared& s, const std::string&, const v1::ListClientsRequest&,
       v1::ListClientsResponse* response) {
      s.node->ListClients(response);
      return absl::OkStatus();
    });
const auto kSetClientQuota =
    AdminMethod<v1::SetClientQuotaRequest, v1::SetClientQuotaResponse>(
        &v1::Admin::AsyncService::RequestSetClientQuota,
        [](const Shared& s, const std::string&, const v1::SetClientQuotaRequest& request,
           v1::SetClientQuotaResponse* response) {
          return s.node->SetClientQuota(request.client_id(), request.quota_bytes(),
                                        response->mutable_client());
        },
        &AdmitQuota);
const auto kSetMemoryLimit =
    AdminMethod<v1::SetMemoryLimitRequest, v1::SetMemoryLimitResponse>(
        &v1::Admin::AsyncService::RequestSetMemoryLimit,
        [](const Shared& s, const std::string&, const v1::SetMemoryLimitRequest& request,
           v1::SetMemoryLimitResponse* response) {
          s.node->SetMemoryLimit(request.ram_limit_bytes(), response);
          return absl::OkStatus();
        });
const auto kDrain = AdminMethod<v1::DrainRequest, v1::DrainResponse>(
    &v1::Admin::AsyncService::RequestDrain,
    [](const Shared& s, const std::string&, const v1::DrainRequest& request,
       v1::DrainResponse* response) {
      s.node->SetDraining(request.drain());
      response->set_draining(s.node->draining());
      return absl::OkStatus();
    });

template <typename Service, typename Request, typename Response>
void Await(Shared* shared, const Method<Service, Request, Response>& method,
           grpc::ServerCompletionQueue* cq) {
  UnaryCall<Service, Request, Response>::Await(shared, &method, cq);
}

// Takes the queue's completions until it is shut down and drained.
// Before it sleeps on the queue, the io thread polls it for up to `poll`
// (common/busy_poll.h): at queue depth 1 a client's next request comes soon
// after the reply, and one that finds the thread awake costs the client's
// send no wakeup and this thread no switch.
void Drain(grpc::ServerCompletionQueue* cq, absl::Duration poll) {
  NameThisThread("grpc-cq");
  void* tag = nullptr;
  bool ok = false;
  while (NextPolled(cq, poll, &tag, &ok)) static_cast<Call*>(tag)->Proceed(ok);
}

}  // namespace

absl::StatusOr<std::string> CallerIdentity(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(kClientIdMetadataKey);
  if (it == md.end()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "no client identity: send metadata \"", kClientIdMetadataKey, "\""));
  }
  absl::string_view id(it->second.data(), it->second.size());
  if (!IsValidClientId(id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "client identity must be 1..", kMaxClientIdLength,
        " characters of [A-Za-z0-9._:@-]"));
  }
  return std::string(id);
}

Services::Services(Node* node, WorkQueue* work, std::string admin_token, int io_threads)
    : io_threads_(io_threads),
      shared_(std::make_unique<Shared>(node, work, std::move(admin_token))) {}

Services::~Services() = default;

void Services::Register(grpc::ServerBuilder* builder) {
  builder->RegisterService(&shared_->page_store);
  builder->RegisterService(&shared_->admin);
  builder->RegisterAsyncGenericService(&shared_->generic);
  for (int i = 0; i < io_threads_; ++i) cqs_.push_back(builder->AddCompletionQueue());
}

void Services::Start() {
  for (auto& owned : cqs_) {
    grpc::ServerCompletionQueue* cq = owned.get();
    Await(shared_.get(), kOpenSession, cq);
    Await(shared_.get(), kHeartbeat, cq);
    Await(shared_.get(), kStore, cq);
    Await(shared_.get(), kLoad, cq);
    Await(shared_.get(), kInvalidate, cq);
    PagesCall::Await(shared_.get(), cq);
    Await(shared_.get(), kGetStatus, cq);
    Await(shared_.get(), kListClients, cq);
    Await(shared_.get(), kSetClientQuota, cq);
    Await(shared_.get(), kSetMemoryLimit, cq);
    Await(shared_.get(), kDrain, cq);
    GenericCall::Await(shared_.get(), cq);
  }
  for (auto& cq : cqs_) threads_.emplace_back(Drain, cq.get(), request_poll_);
}

void Services::CloseStreams() { shared_->CloseStreams(); }

void Services::Shutdown() {
  // The server takes no new calls, but calls it has given up on (past its
  // deadline) may still wait in the work queue, and calls it handed over
  // may still wait in the queues.
  shared_->Stop();
  for (auto& cq : cqs_) cq->Shutdown();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

}  // namespace ramster
