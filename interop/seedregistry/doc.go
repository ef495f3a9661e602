// Package seedregistry is the hand-written etcd registry and gRPC resolver of the
// design's seed article (shared/seeds/003), rebuilt from what the article states so the
// native `dtm-driver-etcd` format can be tested against it both ways:
//
//   - registry: instances are the JSON of an untagged Go struct (so the field names are
//     written as Name, Address, Weight, Group) under /micro/NAME/ADDRESS, put with the
//     lease of a concurrency.Session; ListServices reads the prefix, Subscribe watches it;
//   - resolver: a grpc resolver.Builder with scheme `registry` that lists on build and
//     re-lists on every watch event;
//   - cmd/seed-echo-server and cmd/seed-echo-client: a registered echo server and a
//     client dialing registry://NAME.
package seedregistry
