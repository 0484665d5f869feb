#include "server/admin_service.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

TEST(AdminServiceTest, ReloadAndPinAnswerWhichLoadHangsBeforeTheCallersDeadline) {
  const std::string base = testing::TempDir("admin_service");
  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), base + "/1").ok());
  Notification loading, release;
  ModelManagerOptions o;
  o.base_path = base;
  o.poll_interval = absl::ZeroDuration();
  o.warmup_requests = 5;
  o.check = [&](const Model& model, v1::ModelFigures*) {
    if (model.version() == 2 && !release.HasBeenNotified()) {  // a load that hangs until released
      loading.Notify();
      release.WaitForNotification();
    }
    return absl::OkStatus();
  };
  auto manager = ModelManager::Create(o);
  ASSERT_TRUE(manager.ok()) << manager.status();
  ASSERT_TRUE((*manager)->WaitUntilServing(absl::Seconds(30)));
  AdminService service(manager->get());
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  auto admin = v1::Admin::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), base + "/2").ok());
  (*manager)->RequestScan();
  ASSERT_TRUE(loading.WaitForNotificationWithTimeout(absl::Minutes(1)));
  // Each call gets the reason, not just its own client's DEADLINE_EXCEEDED: the server
  // answers a little before the deadline.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(6)));
    v1::ReloadModelsResponse reply;
    const grpc::Status s = admin->ReloadModels(&ctx, {}, &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("a model load is in progress: version 2 has been loading for"));
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(6)));
    v1::SetServingVersionRequest pin;
    pin.set_version(1);
    v1::SetServingVersionResponse reply;
    const grpc::Status s = admin->SetServingVersion(&ctx, pin, &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("a model load is in progress: version 2 has been loading for"));
    EXPECT_THAT(s.error_message(), HasSubstr("the pin to version 1 is tried once it is done"));
  }
  {
    grpc::ClientContext ctx;
    v1::GetModelStatusResponse status;
    ASSERT_TRUE(admin->GetModelStatus(&ctx, {}, &status).ok());
    EXPECT_EQ(status.serving_version(), 1);
    ASSERT_GE(status.versions_size(), 1);
    EXPECT_EQ(status.versions(0).version(), 2);
    EXPECT_EQ(status.versions(0).state(), v1::LOADING);
  }
  release.Notify();
  {
    grpc::ClientContext ctx;
    v1::ReloadModelsResponse reply;
    const grpc::Status s = admin->ReloadModels(&ctx, {}, &reply);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(reply.serving_version(), 1);  // the pin, tried after the load it waited on
  }
  server->Shutdown();
}

}  // namespace
}  // namespace recserve
