/*
 * Conversion between the castore model (node.h) and the protobuf-c structs generated from
 * proto/tvix/castore/v1/castore.proto, for layers that embed Nodes in other messages
 * (BuildRequest, Build, gRPC). Kept apart from node.h so that most code never sees protobuf-c.
 */
#ifndef OCIBUILD_NODE_PB_H
#define OCIBUILD_NODE_PB_H

#include "castore.pb-c.h"
#include "ocibuild/node.h"

/* Fills out from pb (copies; no validation). Errors name the oneof case when it is unset. */
int obi_node_from_pb(const Tvix__Castore__V1__Node *pb, obi_node *out, obi_error **err);
/* Allocates a protobuf-c Node (free with obi_node_pb_free); bytes point into a fresh copy. */
Tvix__Castore__V1__Node *obi_node_to_pb(const obi_node *node);
void obi_node_pb_free(Tvix__Castore__V1__Node *pb);

int obi_directory_from_pb(const Tvix__Castore__V1__Directory *pb, obi_directory **out,
                          obi_error **err);
/* Allocates (free with obi_directory_pb_free). */
Tvix__Castore__V1__Directory *obi_directory_to_pb(const obi_directory *dir);
void obi_directory_pb_free(Tvix__Castore__V1__Directory *pb);

#endif
