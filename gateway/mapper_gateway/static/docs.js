"use strict";
// Swagger UI over the gateway's own OpenAPI document; every file it needs is served locally.
// The page may carry ?token=: it goes to the API as a bearer header (the spec fetch and
// "Try it out" alike), never into another URL.
(() => {
  const token = new URLSearchParams(window.location.search).get("token");
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the public validator is on the internet, which an edge box may lack
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: (request) => {
      if (token && !request.headers.Authorization) {
        request.headers.Authorization = `Bearer ${token}`;
      }
      return request;
    },
  });
})();
