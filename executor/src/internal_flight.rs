//! The one Flight service shape of Loch's internal endpoints: the
//! coordinator's cluster endpoint (executors register and heartbeat with
//! `DoAction`) and the executors' direct tickets (`DoGet`, plus `DoAction`
//! to claim or cancel a ticket). Each serves a call or two; every other
//! Flight call is refused here, once, with the endpoint's own words.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

/// A stream of Flight messages, as the calls answer.
pub type Stream<T> = BoxStream<'static, Result<T, Status>>;

/// What an internal endpoint serves: `DoAction`, and `DoGet` when it
/// redeems tickets.
#[tonic::async_trait]
pub trait InternalCalls: Send + Sync + 'static {
    /// What a refused call is told the endpoint serves.
    const SERVES: &'static str;

    /// `DoGet` of a ticket; refused unless the endpoint redeems tickets.
    async fn do_get(&self, _ticket: Request<Ticket>) -> Result<Stream<FlightData>, Status> {
        Err(Status::unimplemented(Self::SERVES))
    }

    /// `DoAction`.
    async fn do_action(
        &self,
        action: Request<Action>,
    ) -> Result<Stream<arrow_flight::Result>, Status>;
}

/// The Flight service of an internal endpoint: [`InternalCalls`] and
/// refusals.
#[derive(Debug)]
pub struct Internal<T>(pub T);

fn refused<T, C: InternalCalls>() -> Result<T, Status> {
    Err(Status::unimplemented(C::SERVES))
}

#[tonic::async_trait]
impl<C: InternalCalls> FlightService for Internal<C> {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.0.do_get(request).await.map(Response::new)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.0.do_action(request).await.map(Response::new)
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        refused::<_, C>()
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        refused::<_, C>()
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        refused::<_, C>()
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        refused::<_, C>()
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        refused::<_, C>()
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        refused::<_, C>()
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        refused::<_, C>()
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        refused::<_, C>()
    }
}
