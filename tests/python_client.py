#!/usr/bin/python3
"""An independent recserve client in Python (Debian's python3-grpcio and protobuf).

Stubs are generated from proto/ at build time (tests/py in the build tree; the path
comes from RECSERVE_PYTHON_STUBS or --stubs). Reads a RecommendRequest as JSON, calls
Recommend and prints the RecommendResponse as JSON; also checks health.

  python_client.py --address=127.0.0.1:8500 --request=req.json
  python_client.py --address=127.0.0.1:8500 --health=recserve.v1.Recommender
"""
import argparse
import os
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--stubs", default=os.environ.get("RECSERVE_PYTHON_STUBS", ""))
    parser.add_argument("--request", help="RecommendRequest as a JSON file")
    parser.add_argument("--health", help="service name to check")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if args.stubs:
        sys.path.insert(0, args.stubs)

    import grpc
    from google.protobuf import json_format
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from recserve.v1 import recommender_pb2, recommender_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        if args.health is not None:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=args.health), timeout=args.timeout)
            print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            return 0
        request = recommender_pb2.RecommendRequest()
        with open(args.request) as f:
            json_format.Parse(f.read(), request)
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        try:
            reply = stub.Recommend(request, timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        print(json_format.MessageToJson(reply, preserving_proto_field_name=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
